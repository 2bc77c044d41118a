"""The paper's tables (selectit.paper.tables): shapes and labels, every number traced back to the evaluation
JSONs, manifests and benchmark TSVs it came from, errors naming the bad file, the writers' formats, and
`snakemake tables/all` on a tiny train + eval config."""

from __future__ import annotations

import json
import re
import math
import shutil
import statistics
import time

import numpy as np
import pandas as pd
import pytest
import yaml

from selectit.errors import InputError
from selectit.paper import plan, stats, tables
from tests.workflow_helpers import REPO, job_counts, snakemake, write_tiny_config

BENCHES = ["gsm", "mmlu"]  # given out of order: the tables use the paper's order (MMLU first)


def small_config(**paper) -> dict:
    return {
        "datasets": {"main": {"path": "x.json"}, "other": {"path": "y.json"}},
        "models": {"r1": {"hf": "a"}, "r2": {"hf": "b"}},
        "n_prompts": 2,
        "scoring": {"alpha": 0.2},
        "training": {"bases": {"b1": {"rater": "r1"}, "b2": {"hf": "c"}, "b3": {"hf": "d"}}, "seeds": [0, 1, 2]},
        "evaluation": {"benchmarks": BENCHES},
        "paper": {"methods": ["full", "random", "selectit"], "k_values": [1, 2], "alphas": [0.2, 0.4],
                  "strategies": ["full", "random", "selectit"], "other_bases": ["b3"], "quantities": [0.5, 1.0],
                  **paper},
    }


@pytest.fixture
def eval_tree(tmp_path):
    """Eval JSONs with random values for every run the tables need; returns (config, root, values)."""
    config = small_config()
    rng = np.random.default_rng(7)
    values = {}
    for run in plan.all_runs(config):
        for bench in BENCHES:
            value = float(np.round(rng.uniform(0, 100), 3))
            values[(run, bench)] = value
            path = tables.eval_path(run, bench, tmp_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"benchmark": bench, "value": value, "n": 10}))
    return config, tmp_path, values


def expected_cell(values, base, dataset, method, proportion, bench):
    per_seed = [values[(plan.Run(base, dataset, method, proportion, s), bench)] for s in (0, 1, 2)]
    return statistics.mean(per_seed), statistics.stdev(per_seed)


def expected_overall(values, base, dataset, method, proportion):
    per_seed = [statistics.mean(values[(plan.Run(base, dataset, method, proportion, s), b)] for b in BENCHES)
                for s in (0, 1, 2)]
    return statistics.mean(per_seed), statistics.stdev(per_seed)


def test_table1_shape_labels_and_cells_trace_to_eval_jsons(eval_tree):
    config, root, values = eval_tree
    frame = tables.table1_main(config, root)
    assert list(frame.index.names) == ["Base", "Method"]
    assert list(frame.index) == [(b, m) for b in ("b1", "b2") for m in ("Full data", "Random", "SelectIT")]
    assert list(frame.columns) == [(c, s) for c in ("MMLU", "GSM", "Overall") for s in ("mean", "std")]
    for base in ("b1", "b2"):
        for method, label, proportion in (("full", "Full data", 1.0), ("random", "Random", 0.2),
                                          ("selectit", "SelectIT", 0.2)):
            for bench, column in (("mmlu", "MMLU"), ("gsm", "GSM")):
                mean, std = expected_cell(values, base, "main", method, proportion, bench)
                assert frame.loc[(base, label), (column, "mean")] == pytest.approx(mean)
                assert frame.loc[(base, label), (column, "std")] == pytest.approx(std)
            mean, std = expected_overall(values, base, "main", method, proportion)
            assert frame.loc[(base, label), ("Overall", "mean")] == pytest.approx(mean)
            assert frame.loc[(base, label), ("Overall", "std")] == pytest.approx(std)


def test_one_seed_leaves_std_blank(tmp_path):
    config = small_config()
    config["training"]["seeds"] = [0]
    for run in plan.runs(config)["table1"]:
        for bench in BENCHES:
            path = tables.eval_path(run, bench, tmp_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"value": 50.0 + len(run.method)}))
    frame = tables.table1_main(config, tmp_path)
    assert frame[("MMLU", "std")].isna().all()
    assert frame.loc[("b1", "Random"), ("MMLU", "mean")] == 56.0
    shown = tables.display_frame(frame)
    assert shown.loc[1, "MMLU"] == "56.00"  # no "±" with one seed
    assert "single seed the deviation is left blank" in tables.to_markdown(frame)


@pytest.mark.parametrize("damage", ["missing", "corrupt", "no_value"])
def test_bad_eval_json_is_an_input_error_naming_the_file(eval_tree, damage):
    config, root, _ = eval_tree
    path = tables.eval_path(plan.Run("b2", "main", "random", 0.2, 1), "gsm", root)
    if damage == "missing":
        path.unlink()
    elif damage == "corrupt":
        path.write_text('{"value": 3')
    else:
        path.write_text('{"value": null}')
    with pytest.raises(InputError, match=str(path)):
        tables.table1_main(config, root)


def test_sweep_tables_rows_are_k_and_alpha_values(eval_tree):
    config, root, values = eval_tree
    t2 = tables.table2_k(config, root)
    assert list(t2.index) == [("b1", 1), ("b1", 2), ("b2", 1), ("b2", 2)] and t2.index.names == ["Base", "K"]
    # K = n_prompts is the main SelectIT run; K = 1 is selectit-k1
    assert t2.loc[("b1", 2), ("MMLU", "mean")] == pytest.approx(
        expected_cell(values, "b1", "main", "selectit", 0.2, "mmlu")[0])
    assert t2.loc[("b2", 1), ("GSM", "mean")] == pytest.approx(
        expected_cell(values, "b2", "main", "selectit-k1", 0.2, "gsm")[0])
    t3 = tables.table3_alpha(config, root)
    assert list(t3.index) == [("b1", "0.2"), ("b1", "0.4"), ("b2", "0.2"), ("b2", "0.4")] and t3.index.names[1] == "α"
    assert t3.loc[("b1", "0.4"), ("Overall", "mean")] == pytest.approx(
        expected_overall(values, "b1", "main", "selectit-alpha0.4", 0.2)[0])


def test_table6_and_table10_delta_vs_full(eval_tree):
    config, root, values = eval_tree
    t6 = tables.table6_bases(config, root)
    assert list(t6.index) == [(b, m) for b in ("b1", "b2", "b3") for m in ("Full data", "SelectIT")]
    full = expected_overall(values, "b3", "main", "full", 1.0)[0]
    ours = expected_overall(values, "b3", "main", "selectit", 0.2)[0]
    assert t6.loc[("b3", "SelectIT"), ("Δ Overall vs Full", "")] == pytest.approx(ours - full)
    assert t6.loc[("b3", "Full data"), ("Δ Overall vs Full", "")] == 0
    t10 = tables.table10_strategies(config, root)
    assert t10.index.names == ["Base", "Strategy"]
    random = expected_overall(values, "b1", "main", "random", 0.2)[0]
    full = expected_overall(values, "b1", "main", "full", 1.0)[0]
    assert t10.loc[("b1", "Random"), ("Δ Overall vs Full", "")] == pytest.approx(random - full)


def write_manifest(root, dataset, method, proportion, ids, n_total):
    path = tables.subset_file(dataset, method, proportion, root, ".manifest.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"n_total": n_total, "n_selected": len(ids), "selected_ids": list(ids)}))
    return path


def test_table7_sizes_come_from_manifests(eval_tree):
    config, root, values = eval_tree
    sizes = {"main": 40, "other": 55}
    for dataset, n in sizes.items():
        write_manifest(root, dataset, "full", 1.0, [f"{dataset}{i}" for i in range(n)], n)
        write_manifest(root, dataset, "selectit", 0.2, [f"{dataset}{i}" for i in range(int(n * 0.2))], n)
    t7 = tables.table7_datasets(config, root)
    assert t7.index.names == ["Dataset", "Base", "Method"] and len(t7) == 2 * 2 * 2
    assert t7.loc[("other", "b2", "SelectIT"), ("Size before", "")] == 55
    assert t7.loc[("other", "b2", "SelectIT"), ("Size after", "")] == 11
    assert t7.loc[("main", "b1", "Full data"), ("Size after", "")] == 40
    assert t7.loc[("other", "b1", "SelectIT"), ("GSM", "mean")] == pytest.approx(
        expected_cell(values, "b1", "other", "selectit", 0.2, "gsm")[0])
    tables.subset_file("other", "full", 1.0, root, ".manifest.json").write_text("{}")
    with pytest.raises(InputError, match="other/full/1.0.manifest.json.*n_total"):
        tables.table7_datasets(config, root)


def test_table4_overlaps_on_hand_made_manifests(tmp_path):
    config = small_config()
    # SelectIT keeps 10 ids; the levels each keep 10 of 20
    sets = {
        "selectit": list(range(10)),
        "token_r": [0, 1, 2, 3, 4, 10, 11, 12, 13, 14],
        "sentence_r": [0, 1, 2, 5, 6, 10, 15, 16, 17, 18],
        "model_r": [0, 1, 5, 7, 11, 15, 19, 12, 16, 13],
    }
    for method, ids in sets.items():
        write_manifest(tmp_path, "main", method, 0.2, [f"id{i}" for i in ids], 50)
    t4 = tables.table4_levels(config, tmp_path)
    counts = t4["SelectIT samples"].to_dict()
    # within SelectIT's {0..9}: token {0,1,2,3,4}, sentence {0,1,2,5,6}, model {0,1,5,7}
    assert counts == {"Token-R only": 2, "Sentence-R only": 1, "Model-R only": 1,
                      "Token-R ∩ Sentence-R": 3, "Token-R ∩ Model-R": 2, "Sentence-R ∩ Model-R": 3,
                      "all three": 2, "none of the levels": 2}  # 8 and 9 are chosen by no level
    assert t4.loc["Token-R only", "Share of SelectIT (%)"] == pytest.approx(20.0)
    # level selections among themselves: token-only {3,4,14}; token & sentence {0,1,2,10}
    assert t4.loc["Token-R only", "Overlap of level selections (%)"] == pytest.approx(30.0)
    assert t4.loc["Token-R ∩ Sentence-R", "Overlap of level selections (%)"] == pytest.approx(40.0)
    assert t4.loc["all three", "Overlap of level selections (%)"] == pytest.approx(20.0)  # {0, 1}


def test_writers_csv_markdown_latex_booktabs(eval_tree, tmp_path):
    config, root, values = eval_tree
    frame = tables.table1_main(config, root)
    out = tmp_path / "out"
    tables.write_table(frame, out / "t1.csv", out / "t1.md", out / "t1.tex", "Table 1")
    csv = pd.read_csv(out / "t1.csv")
    assert list(csv.columns) == ["Base", "Method", "MMLU mean", "MMLU std", "GSM mean", "GSM std", "Overall mean",
                                 "Overall std"]
    mean, std = expected_cell(values, "b2", "main", "random", 0.2, "mmlu")
    row = csv[(csv.Base == "b2") & (csv.Method == "Random")].iloc[0]
    assert row["MMLU mean"] == pytest.approx(mean) and row["MMLU std"] == pytest.approx(std)
    md = (out / "t1.md").read_text()
    assert f"{mean:.2f} ± {std:.2f}" in md and md.startswith("### Table 1: Main results")
    tex = (out / "t1.tex").read_text()
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert tex.count(rule) == 1, rule
    assert rf"{mean:.2f} $\pm$ {std:.2f}" in tex and r"\label{tab:t1}" in tex
    assert tables.latex_text("50% of a_b & α") == r"50\% of a\_b \& $\alpha$"
    assert not list(out.glob(".*partial"))


def write_tsv(path, seconds):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("s\th:m:s\tmax_rss\n" + "".join(f"{s}\t0:00:01\t1.0\n" for s in seconds))


def test_table9_measured_and_planned(tmp_path):
    bench = tmp_path / "benchmarks"
    write_tsv(bench / "rate_shard/a.tsv", [10.0])
    write_tsv(bench / "rate_shard/b.tsv", [20.0, 30.0])  # two repeats: their mean
    write_tsv(bench / "evaluate/c.tsv", [7.5])
    expected = {"rate_shard": [str(bench / "rate_shard/a.tsv"), str(bench / "rate_shard/b.tsv"),
                               str(bench / "rate_shard/missing.tsv")],
                "evaluate": [str(bench / "evaluate/c.tsv")]}
    measured = tables.measured_efficiency(expected, {"rate_shard": 1, "evaluate": 2})
    rate = measured.set_index("Stage").loc["rate_shard"]
    assert (rate["Jobs"], rate["Files found"], rate["Wall time (s)"]) == (3, 2, 35.0)
    assert measured.set_index("Stage").loc["evaluate", "GPU-hours"] == pytest.approx(7.5 * 2 / 3600)

    data = tmp_path / "local.json"
    data.write_text(json.dumps([{"instruction": f"q{i}", "output": "a"} for i in range(7)]))
    (tmp_path / "results/models/small").mkdir(parents=True)
    (tmp_path / "results/models/small/model.json").write_text(json.dumps({"theta": 3.0e8}))
    planned_config = tmp_path / "planned.yaml"
    planned_config.write_text(yaml.safe_dump({
        "datasets": {"hub": {"hf_name": "x/y", "n_shards": 4}, "local": {"path": "local.json"}},
        "models": {"big": {"hf": "x/big"}, "small": {"hf": "x/small"}},
        "n_prompts": 3,
        "paper": {"cost": {"records": {"hub": 1000}, "thetas": {"big": 7.0e9}, "peak_tflops": 250}}}))
    planned = tables.planned_cost(planned_config, tokens_per_row=250.0, root=tmp_path)
    row = planned.set_index("Stage").loc["rate hub with big"]
    assert row["Tokens"] == 1000 * 3 * 250.0 and row["FLOPs"] == 2 * 7.0e9 * 1000 * 3 * 250.0
    assert row["GPU-hours"] == pytest.approx(row["FLOPs"] / (250e12 * 0.4) / 3600) and row["Jobs"] == 12
    assert planned.set_index("Stage").loc["rate local with small", "FLOPs"] == 2 * 3.0e8 * 7 * 3 * 250.0
    table = tables.table9_efficiency(measured, planned)
    assert table.index.names == ["Stage", "Source"] and len(table) == 2 + 4 + 2  # measured, planned, two totals
    total = planned.set_index("Stage").loc["rating, total"]
    assert total["GPU-hours"] == pytest.approx(planned["GPU-hours"][:-2].sum()) and total["Jobs"] == 2 * 12 + 2 * 3
    assert "250 TFLOP/s" in tables.to_markdown(table)
    # a Hub dataset without a record count, a rater without theta: errors that say which key to set
    planned_config.write_text(yaml.safe_dump({"datasets": {"hub": {"hf_name": "x/y"}}, "models": {"big": {}}}))
    with pytest.raises(InputError, match="records has no record count for Hub dataset 'hub'"):
        tables.planned_cost(planned_config, 250.0, tmp_path)
    write_tsv(bench / "evaluate/c.tsv", [])
    with pytest.raises(InputError, match="c.tsv"):
        tables.measured_efficiency(expected, {})


def test_table9_counts_each_rating_job_with_its_raters_gpus(tmp_path):
    bench = tmp_path / "benchmarks"
    files = {"small": bench / "rate_shard/d/small/p1/shard000.tsv", "big": bench / "rate_shard/d/big/p1/shard000.tsv"}
    write_tsv(files["small"], [100.0])
    write_tsv(files["big"], [600.0])
    write_tsv(bench / "embed_samples/d/big.tsv", [60.0])
    expected = {"rate_shard": [str(f) for f in files.values()]}
    declared = {"rate_shard": None, "embed_samples": None}  # computed per job: the rater's gpus
    measured = tables.measured_efficiency(expected, declared, tables.benchmarks_on_disk(expected, [], tmp_path),
                                          model_gpus={"small": 1, "big": 4})
    measured = measured.set_index("Stage")
    assert measured.loc["rate_shard", "GPU-hours"] == pytest.approx((100.0 * 1 + 600.0 * 4) / 3600)
    assert measured.loc["rate_shard", "GPUs per job"] == 2.5
    assert measured.loc["embed_samples", "GPU-hours"] == pytest.approx(60.0 * 4 / 3600)
    unknown = tables.measured_efficiency(expected, declared).set_index("Stage")  # no model_gpus: not guessed
    assert math.isnan(unknown.loc["rate_shard", "GPU-hours"])

    planned_config = tmp_path / "planned.yaml"
    planned_config.write_text(yaml.safe_dump({
        "datasets": {"hub": {"hf_name": "x/y"}}, "models": {"big": {"hf": "x/big", "gpus": 4}, "small": {"hf": "x/s"}},
        "paper": {"cost": {"records": {"hub": 10}, "thetas": {"big": 7.0e10, "small": 7.0e9}}}}))
    planned = tables.planned_cost(planned_config, tokens_per_row=100.0, root=tmp_path).set_index("Stage")
    big, small = planned.loc["rate hub with big"], planned.loc["rate hub with small"]
    assert (big["GPUs per job"], small["GPUs per job"]) == (4, 1)
    # 10x the FLOPs, tensor-parallel over its 4 GPUs (a Llama hub id, not prepared here: assumed) at 77 % scaling
    assert big["GPU-hours"] / small["GPU-hours"] == pytest.approx(10 / 0.77)
    assert big["Parallel"].startswith("tensor") and small["Parallel"].startswith("single")
    table = tables.table9_efficiency(measured.reset_index(), planned.reset_index())
    assert "2.5" in tables.to_markdown(table)


def test_reported_vs_reproduced(tmp_path):
    full = [{"instruction": "Calculate 3 + 4.", "input": "", "output": "It is 7."},
            {"instruction": "Write a poem about rain.", "input": "", "output": "Rain falls softly on the roof."},
            {"instruction": "Summarise the text.", "input": "Cats sleep a lot.", "output": "Cats sleep."}]
    paths = {}
    for name, records in (("full", full), ("selectit", full[:2])):
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(records))
    frame = tables.reported_vs_reproduced({**paths, "judge": None})
    assert list(frame.index) == ["Full data", "AlpaGasus (judge)", "SelectIT (Selective Alpaca)"]
    instructions = [r["instruction"] + ("\n" + r["input"] if r["input"] else "") for r in full]
    assert frame.loc["Full data", "Average length (ours)"] == pytest.approx(
        stats.mean_length(instructions, [r["output"] for r in full]))
    assert frame.loc["SelectIT (Selective Alpaca)", "Calculation share % (ours)"] == pytest.approx(
        stats.calculation_share(instructions[:2]))
    assert frame.loc["Full data", "Records (ours)"] == 3
    assert pd.isna(frame.loc["AlpaGasus (judge)", "Average length (ours)"])
    assert frame["Average length (paper)"].tolist() == [tables.PAPER_REPORTED[m]["length"]
                                                         for m in ("full", "judge", "selectit")]
    paths["full"].write_text(json.dumps([{"instruction": "x"}]))
    with pytest.raises(InputError, match="full.json"):
        tables.reported_vs_reproduced(paths)


def test_paper_settings_reject_unknown_cost_key():
    with pytest.raises(InputError, match="paper.cost: unknown keys \\['speed'\\]"):
        plan.settings(small_config(cost={"speed": 1}))


# ------------------------------------------------------------------------------------ the workflow

TINY_TRAINING = {"epochs": 1, "global_batch_size": 2, "per_device_batch_size": 2, "max_length": 64,
                 "gradient_checkpointing": False, "logging_steps": 1}
TINY_EVALUATION = {"benchmarks": ["tydiqa"], "data_dir": str(REPO / "data/default/eval"), "threads": 1,
                   "settings": {"tydiqa": {"limit": 1, "max_new_tokens": 4}}}
TINY_PAPER = {"methods": ["full", "random", "selectit"], "k_values": [1, 2], "alphas": [0.2, 0.4],
              "strategies": ["full", "random", "selectit"], "quantities": [0.5, 1.0],
              "other_methods": ["full", "selectit"], "cost": {"config": str(REPO / "configs/paper.yaml")}}
TABLES = ["table1", "table2", "table3", "table4", "table6", "table7", "table9", "table10", "reported_vs_reproduced"]


def test_snakemake_tables_all_builds_every_table(completed_run, tiny_models, tmp_path):
    source, models = completed_run
    workdir = tmp_path / "wf"
    shutil.copytree(source, workdir, symlinks=True)  # rating and selection are done there
    shutil.rmtree(workdir / ".snakemake" / "locks", ignore_errors=True)
    training = {"bases": {"tinyc": {"hf": str(tiny_models["tinyc"])}}, "methods": ["selectit"],
                "proportions": [0.25], "seeds": [0], "nproc": 1, "threads": 1, "settings": TINY_TRAINING}
    write_tiny_config(workdir, models, training=training, evaluation=TINY_EVALUATION,
                      paper={**TINY_PAPER, "proportion": 0.25})
    counts = job_counts(workdir, "tables/all")
    # runs: full, random, selectit, selectit-k1, selectit-alpha0.4, selectit at 0.5 (quantity)
    assert counts["train_subset"] == counts["evaluate"] == 6, counts
    assert counts["table"] == len(TABLES), counts  # one wildcard rule, one job per registered table
    assert counts["tables_index"] == 1 and "rate_shard" not in counts
    start = time.monotonic()
    snakemake(workdir, "--cores", "2", "tables/all")
    print(f"tables/all: {time.monotonic() - start:.1f} s")
    index = (workdir / "tables/all").read_text()
    for name in TABLES:
        for ext in ("csv", "md", "tex"):
            assert (workdir / f"results/tables/{name}.{ext}").is_file(), (name, ext)
        assert (workdir / f"results/tables/{name}.md").read_text() in index
    t1 = pd.read_csv(workdir / "results/tables/table1.csv")
    assert t1["Method"].tolist() == ["Full data", "Random", "SelectIT"]
    value = json.loads((workdir / "results/eval/tinyc/tiny/random/0.25/seed0/tydiqa.json").read_text())["value"]
    assert t1.loc[1, "TyDiQA mean"] == pytest.approx(value) and t1.loc[1, "Overall mean"] == pytest.approx(value)
    t9 = pd.read_csv(workdir / "results/tables/table9.csv").set_index("Stage")
    assert t9.loc["train_subset", "Files found"] == 6 and t9.loc["train_subset", "Wall time (s)"] > 0
    assert t9.loc["rate_shard", "Files found"] == t9.loc["rate_shard", "Jobs"] == 8
    assert "rate alpaca_gpt4 with llama2_70b" in t9.index  # the paper config's planned cost
    t4 = pd.read_csv(workdir / "results/tables/table4.csv")
    assert t4["Levels"].tolist()[:3] == ["Token-R only", "Sentence-R only", "Model-R only"]
    reported = pd.read_csv(workdir / "results/tables/reported_vs_reproduced.csv").set_index("Data")
    assert reported.loc["Full data", "Records (ours)"] == 24  # the tiny data set
    assert pd.isna(reported.loc["AlpaGasus (judge)", "Records (ours)"])  # judge is not in paper.methods here
    assert job_counts(workdir, "tables/all") == {}
    snakemake(workdir, "--report", "report.html", "tables/all")  # the captions under report/tables/ resolve
    html = (workdir / "report.html").read_text(errors="replace")
    assert "main results" in html  # report/tables/table1.rst, through the one caption template
    # a paper setting one table reads (Table 1's rows) reruns that table only: no fine-tune, no other table
    write_tiny_config(workdir, models, training=training, evaluation=TINY_EVALUATION,
                      paper={**TINY_PAPER, "proportion": 0.25, "methods": ["selectit", "random", "full"]})
    out = snakemake(workdir, "-n", "tables/all").stdout
    assert re.findall(r"wildcards: table=(\w+)", out) == ["table1"]
    assert job_counts(workdir, "tables/all") == {"table": 1, "tables_index": 1}


def test_schema_paper_section_mirrors_plan_defaults():
    schema = yaml.safe_load((REPO / "schemas/config.schema.yaml").read_text())["properties"]["paper"]
    assert schema["additionalProperties"] is False and set(schema["properties"]) == set(plan.DEFAULTS)
    for key, spec in schema["properties"].items():
        if "default" in spec:
            assert spec["default"] == plan.DEFAULTS[key], key
    cost = schema["properties"]["cost"]["properties"]
    assert {k: v["default"] for k, v in cost.items()} == plan.DEFAULTS["cost"]
