"""The benchmark download (selectit.resources, rules/resources.smk), tested on the copies of the public data in
../shared/data as a local mirror (this machine has no internet): it assembles resources/eval in the layout the
evaluation modules read, checks every file's sha256, and refuses a corrupted file with an error naming the file
and both hashes, leaving nothing behind."""

from __future__ import annotations

import hashlib
import shutil

import pytest
import yaml

from selectit import resources
from selectit.errors import InputError
from selectit.evaluation import BENCHMARKS
from selectit.evaluation.cli import check_evaluation
from tests.conftest import REPO, SHARED
from tests.workflow_helpers import snakemake, write_tiny_config

REAL = SHARED / "data"
PAPER = yaml.safe_load((REPO / "configs" / "paper.yaml").read_text())["evaluation"]
# Every benchmark whose files the mirror holds: the TyDiQA GoldP dev file is not in ../shared/data.
IN_MIRROR = ["mmlu", "gsm", "bbh", "codex", "alpaca_eval"]
GOLDP_DEV = "tydiqa/tydiqa-goldp-v1.1-dev.json"


def shared_sums() -> dict[str, str]:
    sums = {}
    for line in (REAL / "SHA256SUMS").read_text().splitlines():
        digest, path = line.split(None, 1)
        sums[path.strip().removeprefix("./")] = digest
    return sums


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_every_benchmark_has_pinned_sources_and_the_shared_copies_hashes():
    assert {f.benchmark for f in resources.FILES} == set(BENCHMARKS)
    sums = shared_sums()
    for item in resources.FILES:
        assert item.path.startswith(BENCHMARKS[item.benchmark].data_subdir + "/"), item.path  # where it is read
        if item.path == GOLDP_DEV:  # the one unpinned official file; pinned by its TFDS-recorded hash
            assert item.url == "https://storage.googleapis.com/tydiqa/v1.1/tydiqa-goldp-v1.1-dev.json"
            continue
        assert sums[item.path] == item.sha256, item.path  # the copies in ../shared/data are these files
        assert item.url.startswith("https://raw.githubusercontent.com/"), item.url
        repo_commit = item.url.removeprefix("https://raw.githubusercontent.com/").split("/")[:3]
        assert len(repo_commit[2]) == 40, item.url  # a commit, not a branch
    assert len([f for f in resources.FILES if f.benchmark == "mmlu"]) == 2 * 57
    assert len([f for f in resources.FILES if f.benchmark == "bbh"]) == 2 * 27


def test_a_mirror_assembles_the_folder_the_evaluations_read(tmp_path):
    root = tmp_path / "resources" / "eval"
    paths = resources.download(root, IN_MIRROR, mirror=REAL)
    assert len(paths) == len(resources.files_for(IN_MIRROR))
    assert {str(p.relative_to(root)) for p in paths} == set(leftovers(root))  # nothing else, no partial file
    for item in resources.files_for(IN_MIRROR):
        assert sha(root / item.path) == item.sha256 == sha(REAL / item.path)
    # the real check of each module (the files its run reads), with the paper's settings
    check_evaluation(root, IN_MIRROR, PAPER["settings"])
    # TyDiQA's one-shot file comes from the mirror too (a file:// base this time); its GoldP dev file is not there
    one_shot = resources.entry("tydiqa/tydiqa-one-shot.json")
    resources.fetch(one_shot, root / one_shot.path, mirror=REAL.as_uri())
    assert sha(root / one_shot.path) == one_shot.sha256
    with pytest.raises(InputError, match=f"cannot download {GOLDP_DEV} from file://.*{GOLDP_DEV}"):
        resources.download(root, ["tydiqa"], mirror=REAL)
    assert not (root / GOLDP_DEV).exists() and not list(root.rglob(".*partial"))


def test_a_kept_file_is_not_downloaded_again_and_a_damaged_one_is(tmp_path):
    root = tmp_path / "eval"
    resources.download(root, ["gsm"], mirror=REAL)
    target = root / "gsm8k" / "test.jsonl"
    empty = tmp_path / "empty"
    empty.mkdir()
    resources.download(root, ["gsm"], mirror=empty)  # the pinned file is there: the (empty) mirror is not read
    target.write_text("damaged\n")
    resources.download(root, ["gsm"], mirror=REAL)
    assert sha(target) == resources.entry("gsm8k/test.jsonl").sha256


def corrupted_mirror(tmp_path, path: str):
    """A copy of the shared data with one byte of ``path`` changed; (mirror, the corrupted file's sha256)."""
    mirror = tmp_path / "mirror"
    shutil.copytree(REAL, mirror, ignore=shutil.ignore_patterns("mmlu", "bbh"))
    data = bytearray((mirror / path).read_bytes())
    data[len(data) // 2] ^= 0x01
    (mirror / path).write_bytes(bytes(data))
    return mirror, hashlib.sha256(bytes(data)).hexdigest()


def test_a_corrupted_file_is_refused_and_leaves_nothing(tmp_path):
    item = resources.entry("humaneval/HumanEval.jsonl.gz")
    mirror, bad = corrupted_mirror(tmp_path, item.path)
    root = tmp_path / "eval"
    expected = f"^{item.path} from file://.*{item.path} has sha256 {bad}, expected {item.sha256} "
    with pytest.raises(InputError, match=expected):
        resources.fetch(item, root / item.path, mirror=mirror)
    assert leftovers(root) == []  # no file under its name, no partial one beside it
    # a good file already in place is not replaced by the corrupted one
    resources.fetch(item, root / item.path, mirror=REAL)
    with pytest.raises(InputError, match=bad):
        resources.fetch(item, root / item.path, mirror=mirror)
    assert leftovers(root) == [item.path] and sha(root / item.path) == item.sha256


def test_unknown_paths_and_benchmarks_are_input_errors(monkeypatch):
    with pytest.raises(InputError, match="mmlu/test/astrology_test.csv is not a file of the benchmark download"):
        resources.entry("mmlu/test/astrology_test.csv")
    # a name outside the registry: the config key (the schema lists no names) and the known ones
    with pytest.raises(InputError, match=r"^config evaluation.benchmarks: unknown benchmark\(s\) \['superni'\]; "
                                         r"known: \['alpaca_eval', 'bbh', 'codex', 'gsm', 'mmlu', 'tydiqa'\]"):
        resources.files_for(["gsm", "superni"])
    # a registered benchmark this table has no files for
    monkeypatch.setattr(resources, "FILES", tuple(f for f in resources.FILES if f.benchmark != "tydiqa"))
    with pytest.raises(InputError, match=r"^config evaluation.benchmarks: no download source for benchmark\(s\) "
                                         r"\['tydiqa'\]"):
        resources.files_for(["gsm", "tydiqa"])


def mirror_config(workdir, mirror, benchmarks=("gsm", "codex", "alpaca_eval")):
    evaluation = {"benchmarks": list(benchmarks), "data_dir": resources.DOWNLOAD_DIR,
                  "download": {"mirror": str(mirror)}}
    write_tiny_config(workdir, {"m": workdir / "no_model"}, evaluation=evaluation)


def test_the_download_rule_fetches_and_checks_each_file(tmp_path):
    workdir = tmp_path / "wf"
    mirror_config(workdir, REAL)
    proc = snakemake(workdir, "eval_downloads", "--cores", "2")
    out = proc.stdout + proc.stderr
    wanted = resources.files_for(["gsm", "codex", "alpaca_eval"])
    assert out.count("localrule download_eval_file:") == len(wanted) == 3
    for item in wanted:
        assert sha(workdir / resources.DOWNLOAD_DIR / item.path) == item.sha256
    # a corrupted source stops the job with the file and both hashes, and leaves no output
    item = resources.entry("gsm8k/test.jsonl")
    mirror, bad = corrupted_mirror(tmp_path, item.path)
    (workdir / resources.DOWNLOAD_DIR / item.path).unlink()
    mirror_config(workdir, mirror)
    proc = snakemake(workdir, "eval_downloads", "--cores", "1", check=False)
    assert proc.returncode != 0
    assert f"error in rule download_eval_file: {item.path} from file://" in proc.stderr
    assert f"has sha256 {bad}, expected {item.sha256}" in proc.stderr
    assert leftovers(workdir / resources.DOWNLOAD_DIR / "gsm8k") == []
