"""`snakemake release` on the tiny workflow: one Hub dataset folder per subset that `datasets.load_dataset` loads
offline as the subset (default config) and the whole dataset's score table (config `scores`), with a dataset card."""

import json

import pandas as pd
import pytest
import yaml

from selectit.errors import InputError
from selectit.release import read_subset, size_category
from tests.workflow_helpers import job_counts, snakemake, write_tiny_config


@pytest.fixture
def offline_datasets(monkeypatch, tmp_path):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    return lambda folder, *args: datasets.load_dataset(str(folder), *args, split="train",
                                                       cache_dir=str(tmp_path / "hf_cache"))


def card_header(folder):
    text = (folder / "README.md").read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1]), text


def test_release_folders_load_as_the_subset_and_its_scores(completed_run, offline_datasets):
    workdir, models = completed_run
    counts = job_counts(workdir, "release")
    assert counts["release_subset"] == 2  # no rating or selection again (the gathered score table may be new)
    assert not {"rate_shard", "merge_ratings", "select_subset"} & set(counts), counts
    snakemake(workdir, "release", "--cores", "2")
    all_scores = pd.read_parquet(workdir / "results/scores/tiny/selectit.parquet")
    for method in ("selectit", "random"):
        folder = workdir / "results/release/tiny" / method / "0.25"
        subset_file = workdir / f"results/subsets/tiny/{method}/0.25.json"
        subset = json.loads(subset_file.read_text())
        manifest = json.loads((workdir / f"results/subsets/tiny/{method}/0.25.manifest.json").read_text())
        assert (folder / "alpaca.json").read_bytes() == subset_file.read_bytes()

        ds = offline_datasets(folder)
        assert ds.column_names == ["id", "instruction", "input", "output"]
        assert ds.to_list() == subset and ds.num_rows == 6

        scores = offline_datasets(folder, "scores").to_pandas()
        assert len(scores) == 24  # the whole dataset, not only the subset
        assert list(scores.columns) == list(all_scores.columns) + ["selected"]
        assert {c.split("/")[1] for c in scores.columns if c.startswith("token/")} == {"tinya", "tinyb"}
        assert {"sentence/tinya", "sentence/tinyb", "token_r", "sentence_r", "model_r", "selectit"} <= set(scores)
        pd.testing.assert_frame_equal(scores.drop(columns="selected"), all_scores)
        assert sorted(scores.loc[scores["selected"], "id"]) == sorted(r["id"] for r in subset)

        header, text = card_header(folder)
        assert header["license"] == "unknown"  # the schema's default
        assert header["size_categories"] == ["n<1K"]
        assert [c["config_name"] for c in header["configs"]] == ["default", "scores"]
        assert "source_datasets" not in header  # a local file, not a Hub dataset
        for model in ("tinya", "tinyb"):  # every rater of the score table, with its prepared fingerprint
            info = json.loads((workdir / f"results/models/{model}/model.json").read_text())
            assert f"| {model} | hf: `{models[model]}` | {info['theta']} | `{info['fingerprint']}` |" in text
        for model, fingerprint in (manifest.get("model_fingerprints") or {}).items():
            assert fingerprint in text
        assert f"6 of the 24 instruction-response pairs of `tiny` (local file `data.json`)" in text
        assert f"`{manifest['dataset_fingerprint']}`" in text and "records read 24, kept 24" in text
        assert all(f"`{pid}`" in text for pid in manifest.get("prompt_ids") or [])

    # the license is a release setting: editing it reruns the release jobs and nothing else
    write_tiny_config(workdir, models, release={"license": "cc-by-4.0"})
    try:
        assert job_counts(workdir, "release") == {"release_subset": 2, "release": 1}
        snakemake(workdir, "release", "--cores", "2")
        assert card_header(workdir / "results/release/tiny/selectit/0.25")[0]["license"] == "cc-by-4.0"
    finally:
        write_tiny_config(workdir, models)


def test_a_subset_and_a_manifest_of_different_runs_are_refused(tmp_path):
    subset = tmp_path / "0.25.json"
    subset.write_text(json.dumps([{"id": "s1", "instruction": "q", "input": "", "output": "a"}]))
    manifest = tmp_path / "0.25.manifest.json"
    manifest.write_text(json.dumps({"selected_ids": ["s2"], "n_selected": 1, "n_total": 4}))
    with pytest.raises(InputError, match=r"0.25.json: its ids differ from the selected_ids of .*0.25.manifest.json"):
        read_subset(subset, manifest)


def test_size_categories_follow_the_hub_names():
    assert [size_category(n) for n in (0, 999, 1000, 52002, 100_000, 2_500_000)] == [
        "n<1K", "n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M"]


def test_score_table_joins_a_baselines_scores_by_id_and_marks_the_selected(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from selectit.release import score_table

    pq.write_table(pa.table({"id": ["a", "b", "c"], "index": [0, 1, 2], "selectit": [0.1, 0.9, 0.5]}),
                   tmp_path / "selectit.parquet")
    pq.write_table(pa.table({"id": ["c", "a", "b"], "ifd": [0.7, 1.2, 0.3], "truncated": [False, True, False]}),
                   tmp_path / "ifd.parquet")
    table = score_table(tmp_path / "selectit.parquet", ["c"], {"ifd": tmp_path / "ifd.parquet"}, n_total=3)
    assert table.to_pydict() == {"id": ["a", "b", "c"], "index": [0, 1, 2], "selectit": [0.1, 0.9, 0.5],
                                 "ifd/ifd": [1.2, 0.3, 0.7], "ifd/truncated": [True, False, False],
                                 "selected": [False, False, True]}
    with pytest.raises(InputError, match=r"selectit.parquet: 3 samples, but the subset manifest counts 4"):
        score_table(tmp_path / "selectit.parquet", ["c"], n_total=4)
    with pytest.raises(InputError, match=r"selectit.parquet: no scores for 1 selected samples"):
        score_table(tmp_path / "selectit.parquet", ["z"])


def test_a_hub_source_is_named_in_the_card_header():
    from selectit.release import card_header

    header = card_header("x", 10_400, "cc-by-nc-4.0", {"hf_name": "vicgalle/alpaca-gpt4", "revision": "main"},
                         {"subset": "data/a.parquet", "scores": "scores/b.parquet"})
    assert header["source_datasets"] == ["vicgalle/alpaca-gpt4"] and header["size_categories"] == ["10K<n<100K"]
    assert header["configs"][0]["data_files"] == [{"split": "train", "path": "data/a.parquet"}]
