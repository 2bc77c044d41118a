"""The paper's figures: each figure function on small hand-made tables (the plotted values are the inputs'),
embeddings (batched = one row at a time, padding and special tokens not pooled), and the figure rules on a tiny
workflow with `snakemake figures/all` and `--report`."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest

from selectit.errors import InputError
from selectit.paper import figures
from tests.workflow_helpers import job_counts, snakemake, tiny_records, write_tiny_config


def assert_figure_files(tmp_path, name):
    pdf, png = tmp_path / f"{name}.pdf", tmp_path / f"{name}.png"
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 1000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    assert not list(tmp_path.glob(".*partial"))  # written atomically
    return pdf, png


def paths(tmp_path, name):
    return tmp_path / f"{name}.pdf", tmp_path / f"{name}.png"


# ----------------------------------------------------------------------------------------- data quantity


def eval_rows(values):
    """values: (base, method, proportion, seed) -> {benchmark: value}."""
    return pd.DataFrame([{"base": b, "dataset": "d", "method": m, "proportion": p, "seed": s, "benchmark": bench,
                          "value": v, "path": "x"}
                         for (b, m, p, s), vs in values.items() for bench, v in vs.items()])


def test_quantity_points_are_seed_means_of_overall_minus_full(tmp_path):
    values = {
        ("b1", "full", 1.0, 0): {"mmlu": 40.0, "gsm": 10.0}, ("b1", "full", 1.0, 1): {"mmlu": 42.0, "gsm": 12.0},
        ("b1", "selectit", 0.1, 0): {"mmlu": 44.0, "gsm": 20.0}, ("b1", "selectit", 0.1, 1): {"mmlu": 46.0, "gsm": 2.0},
        ("b2", "full", 1.0, 0): {"mmlu": 30.0, "gsm": 30.0}, ("b2", "selectit", 0.5, 0): {"mmlu": 20.0, "gsm": 25.0},
    }
    points = figures.quantity_points(eval_rows(values), ["mmlu", "gsm"])
    got = {(r.base, r.proportion): (r.overall, r.delta_pp, r.n_seeds) for r in points.itertuples()}
    b1_full = ((40 + 10) / 2 + (42 + 12) / 2) / 2  # 26
    b1_sel = ((44 + 20) / 2 + (46 + 2) / 2) / 2  # 28
    assert got[("b1", 1.0)] == pytest.approx((b1_full, 0.0, 2))
    assert got[("b1", 0.1)] == pytest.approx((b1_sel, b1_sel - b1_full, 2))
    assert got[("b2", 0.5)] == pytest.approx((22.5, 22.5 - 30.0, 1))
    plotted = figures.plot_data_quantity(points, *paths(tmp_path, "q"))
    assert_figure_files(tmp_path, "q")
    assert plotted["percent"].tolist() == [100 * p for p in points["proportion"]]
    assert plotted["delta_pp"].tolist() == points["delta_pp"].tolist()


def test_quantity_points_need_every_benchmark_and_a_full_run():
    values = {("b1", "full", 1.0, 0): {"mmlu": 1.0, "gsm": 2.0}, ("b1", "selectit", 0.1, 0): {"mmlu": 1.0}}
    with pytest.raises(InputError, match=r"no evaluation for \['gsm'\]"):
        figures.quantity_points(eval_rows(values), ["mmlu", "gsm"])
    values = {("b1", "selectit", 0.1, 0): {"mmlu": 1.0}}
    with pytest.raises(InputError, match="no full-data run"):
        figures.quantity_points(eval_rows(values), ["mmlu"])


def test_read_eval_results_reads_each_json(tmp_path):
    runs, files = [], []
    for i, bench in enumerate(["mmlu", "gsm"]):
        path = tmp_path / f"{bench}.json"
        path.write_text(json.dumps({"benchmark": bench, "value": 10.0 + i}))
        runs.append({"base": "b", "dataset": "d", "method": "full", "proportion": 1.0, "seed": 0, "benchmark": bench})
        files.append(path)
    table = figures.read_eval_results(runs, files)
    assert table["value"].tolist() == [10.0, 11.0] and table["benchmark"].tolist() == ["mmlu", "gsm"]
    (tmp_path / "gsm.json").write_text(json.dumps({"value": None}))
    with pytest.raises(InputError, match="gsm.json"):
        figures.read_eval_results(runs, files)


# ------------------------------------------------------------------------------ length and calculation


def subset(rows):
    return pd.DataFrame(rows, columns=["instruction", "response"]).assign(id=[f"s{i}" for i in range(len(rows))])


FULL = subset([("Calculate 3 + 4.", "It is 7."),  # calculation; 4 + 3 words
               ("Write a short poem about rain.", "Rain falls softly on the roof."),  # 6 + 6
               ("How many legs do 3 cats have?", "Twelve."),  # calculation; 7 + 1
               ("Name a colour.", "Blue.")])  # 3 + 1
SELECTED = FULL.iloc[[0, 2]]


def test_length_and_calculation_values_and_paper_markers(tmp_path):
    stats = figures.subset_statistics({"full": FULL, "judge": FULL.iloc[[1, 3]], "selectit": SELECTED})
    assert stats["n"].tolist() == [4, 2, 2]
    assert stats["mean_length"].tolist() == pytest.approx([(7 + 12 + 8 + 4) / 4, (12 + 4) / 2, (7 + 8) / 2])
    assert stats["calculation_share"].tolist() == pytest.approx([50.0, 0.0, 100.0])
    plotted = figures.plot_length_and_calculation(stats, *paths(tmp_path, "lc"))
    assert_figure_files(tmp_path, "lc")
    assert plotted["mean_length"].tolist() == stats["mean_length"].tolist()
    assert plotted["paper_mean_length"].tolist() == [176.09, 208.27, 241.85]
    assert plotted["paper_calculation_share"].tolist() == [4.34, 1.83, 8.55]
    other = figures.plot_length_and_calculation(stats.iloc[[0, 2]].reset_index(drop=True), *paths(tmp_path, "lc2"),
                                                reported={})
    assert other["paper_mean_length"].isna().all()


def test_trend_statistics_per_proportion(tmp_path):
    stats = figures.trend_statistics({1.0: FULL, 0.5: SELECTED})
    assert stats["proportion"].tolist() == [0.5, 1.0]  # sorted
    assert stats["calculation_share"].tolist() == pytest.approx([100.0, 50.0])
    assert stats["mean_length"].tolist() == pytest.approx([7.5, 7.75])
    plotted = figures.plot_trends(stats, *paths(tmp_path, "tr"), selected_proportion=0.5)
    assert_figure_files(tmp_path, "tr")
    assert plotted["percent"].tolist() == [50.0, 100.0]
    with pytest.raises(InputError, match="0.2 is empty"):
        figures.trend_statistics({0.2: FULL.iloc[[]]})


def test_read_subset_checks_records(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps([{"id": "a", "instruction": "i", "input": "", "output": "o"}]))
    assert figures.read_subset(path).to_dict("records") == [{"id": "a", "instruction": "i", "response": "o"}]
    path.write_text(json.dumps([{"id": "a", "instruction": "i"}]))
    with pytest.raises(InputError, match="record 0 has no text 'output'"):
        figures.read_subset(path)


# ---------------------------------------------------------------------------------------------- t-SNE


def test_tsne_points_cap_groups_and_are_deterministic(tmp_path):
    rng = np.random.default_rng(0)
    ids = [f"s{i}" for i in range(40)]
    # two well separated clusters: the first 20 samples near 0, the rest near 10
    vectors = [rng.normal(0 if i < 20 else 10, 1, 8).astype(np.float32) for i in range(40)]
    embeddings = pd.DataFrame({"id": ids, "vector": vectors})
    groups = {"Random": ids[::2], "SelectIT": ids[:15]}  # s0, s2, ... in both
    points = figures.tsne_points(embeddings, groups, n=12, perplexity=30, seed=0)
    assert points.groupby("group").size().to_dict() == {"Random": 12, "SelectIT": 12}
    assert set(points[points.group == "Random"]["id"]) <= set(groups["Random"])
    unique = points.drop_duplicates("id")
    assert points.attrs["perplexity"] == pytest.approx((len(unique) - 1) / 3)  # lowered for few samples
    both = points[points.duplicated("id", keep=False)]
    assert not both.empty and (both.groupby("id")[["x", "y"]].nunique() == 1).all().all()  # one position each
    again = figures.tsne_points(embeddings, groups, n=12, perplexity=30, seed=0)
    pd.testing.assert_frame_equal(points, again)
    # t-SNE keeps the two clusters apart: every point is nearer its own cluster's centre
    cluster = unique["id"].str[1:].astype(int) >= 20
    centres = unique.groupby(cluster)[["x", "y"]].mean()
    for is_far, x, y in zip(cluster, unique["x"], unique["y"]):
        d = ((centres - [x, y]) ** 2).sum(axis=1)
        assert d.idxmin() == is_far
    plotted = figures.plot_tsne(points, *paths(tmp_path, "ts"), model="tiny")
    assert_figure_files(tmp_path, "ts")
    assert plotted[["x", "y"]].to_numpy().tolist() == points[["x", "y"]].to_numpy().tolist()
    with pytest.raises(InputError, match="no embedding"):
        figures.tsne_points(embeddings, {"Random": ["nope"] + ids[:5]}, n=12, perplexity=5, seed=0)


# ------------------------------------------------------------------------------------ score distributions


def score_table():
    ids = [f"s{i}" for i in range(6)]
    return pd.DataFrame({
        "id": ids, "index": range(6),
        "token/a/p1": [1.0, 2.0, 3.0, 4.0, 5.0, 0.5], "token/a/p2": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
        "sentence/a": [0.5, 1.0, 1.5, 2.0, 2.5, 0.4],
        "token/b/p1": [2.0] * 6, "token/b/p2": [3.0] * 6, "sentence/b": [2.5] * 6,
        "token_r": [0.0, 1, 2, 3, 4, 5], "sentence_r": [5.0, 4, 3, 2, 1, 0], "model_r": [1.0] * 6,
        "selectit": [0.9, 0.1, 0.8, 0.2, 0.7, 0.3],
    })


def test_score_levels_hold_every_column():
    scores = score_table()
    levels = figures.score_levels(scores)
    token_a = levels[levels.level == "Token level (a, 2 prompts)"]["score"]
    assert sorted(token_a) == sorted(scores["token/a/p1"].tolist() + scores["token/a/p2"].tolist())
    assert levels[levels.level == "Sentence level (b)"]["score"].tolist() == [2.5] * 6
    for column, label in figures.LEVEL_LABELS.items():
        assert levels[levels.level == label]["score"].tolist() == scores[column].tolist()
    assert len(levels) == 6 * (2 + 2 + 1 + 1 + 4)
    with pytest.raises(InputError, match="selectit"):
        figures.score_levels(scores.drop(columns="selectit"))


def test_flawed_removed_share_and_plot(tmp_path):
    scores = score_table()
    samples = pd.DataFrame({"id": scores["id"], "flaw": ["off_topic", None, "refusal", None, None, "truncated"]})
    selected = ["s0", "s4"]  # the two best SelectIT scores; one of the three flawed records
    records = figures.flaw_records(samples, scores, selected)
    assert records["record"].tolist() == ["flawed", "clean", "flawed", "clean", "clean", "flawed"]
    assert records["selected"].tolist() == [True, False, False, False, True, False]
    assert figures.flawed_removed_share(records) == pytest.approx(100 * 2 / 3)
    levels = figures.score_levels(scores)
    figures.plot_score_distributions(levels, records, 1 / 3, *paths(tmp_path, "sd"), score_levels_k=5)
    assert_figure_files(tmp_path, "sd")
    summary = figures.score_summary(levels, records, 1 / 3).set_index("level")
    assert summary.loc["SelectIT", "mean"] == pytest.approx(scores["selectit"].mean())
    assert summary.loc["SelectIT, flawed records", "n_selected"] == 1
    assert summary.loc["SelectIT, flawed records", "percent_left_out"] == pytest.approx(100 * 2 / 3)
    assert summary.loc["SelectIT, clean records", "n"] == 3
    figures.plot_score_distributions(levels, None, 1 / 3, *paths(tmp_path, "sd1"))  # no flaw labels: one panel
    assert_figure_files(tmp_path, "sd1")
    assert not figures.has_flaw_labels(samples.assign(flaw=None))
    with pytest.raises(InputError, match="not in the samples"):
        figures.flaw_records(samples, scores, ["s0", "zz"])


def test_write_index(tmp_path):
    text = figures.write_index([{"name": "tsne", "files": ["figures/tsne.png"], "caption": "A t-SNE.",
                                 "sources": ["results/a.parquet", "results/b.json"]}], tmp_path / "all")
    assert (tmp_path / "all").read_text() == text
    assert "## tsne" in text and "A t-SNE." in text and "- `results/b.json`" in text


# ------------------------------------------------------------------------------------------- embeddings


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    import torch

    from selectit.models import load_prepared

    return load_prepared(tiny_model_dir, dtype=torch.float32, device="cpu")


TEXTS = ["What is 2 plus 3?\nIt is 5.", "Name a colour.\nBlue.",
         "Write a sentence about the sea and the sky, and the boats that sail between them at dawn.\nBoats sail.",
         "Hi\nHello there, how can I help you today with anything at all?"]


def test_embeddings_batched_equal_one_by_one(tiny_model):
    from selectit.embeddings import embed_texts

    model, tokenizer = tiny_model
    batched, stats = embed_texts(model, tokenizer, TEXTS, max_length=64, token_budget=4096)
    single, single_stats = embed_texts(model, tokenizer, TEXTS, max_length=64, token_budget=1)  # a row per batch
    assert stats["batches"] < len(TEXTS) == single_stats["batches"]
    assert stats["padded_tokens"] > stats["tokens"]  # rows of different lengths were padded
    assert batched.shape == (len(TEXTS), model.config.hidden_size)
    np.testing.assert_allclose(batched, single, rtol=1e-4, atol=1e-5)
    assert not np.allclose(batched[0], batched[1])


def test_padding_and_special_tokens_are_not_pooled(tiny_model):
    import torch

    from selectit.embeddings import EncodedText, embed_batch, encode_texts

    model, tokenizer = tiny_model
    short, long = encode_texts(tokenizer, TEXTS[:1] + TEXTS[2:3], max_length=64)
    # the pad id a row is padded with changes nothing
    a = embed_batch(model, [short, long], pad_id=0)
    b = embed_batch(model, [short, long], pad_id=tokenizer.eos_token_id or 1)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # pooled positions only: the mean of the unpadded hidden states over the positions marked pooled
    marked = EncodedText(long.input_ids, [0] + [1] * (len(long.input_ids) - 1))  # position 0 as if special
    got = embed_batch(model, [short, marked], pad_id=0)[1]
    with torch.inference_mode():
        hidden = model.get_decoder()(input_ids=torch.tensor([long.input_ids])).last_hidden_state[0]
    np.testing.assert_allclose(got, hidden[1:].mean(dim=0).numpy(), rtol=1e-4, atol=1e-5)
    assert not np.allclose(got, hidden.mean(dim=0).numpy(), atol=1e-4)
    with_special = tokenizer(TEXTS[0], return_special_tokens_mask=True)
    assert short.pooled == [1 - s for s in with_special["special_tokens_mask"]]


def test_embed_samples_file(tiny_model_dir, tmp_path):
    import pyarrow.parquet as pq

    from selectit.embeddings import embed_samples_file, read_embeddings

    samples = pd.DataFrame({"id": ["a", "b", "c"], "index": [0, 1, 2], "instruction": ["Hi", "Add 2 and 3.", "Why?"],
                            "response": ["Hello.", "5", "Because the sky scatters blue light."]})
    samples.to_parquet(tmp_path / "samples.parquet")
    stats = embed_samples_file(tiny_model_dir, tmp_path / "samples.parquet", tmp_path / "emb.parquet",
                               max_length=32, dtype="fp32", threads=1)
    table = read_embeddings(tmp_path / "emb.parquet")
    assert table["id"].tolist() == ["a", "b", "c"] and len(table["vector"][0]) == stats["dim"]
    meta = json.loads(pq.read_schema(tmp_path / "emb.parquet").metadata[b"selectit"])
    assert meta["model_fingerprint"] and meta["max_length"] == 32
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []
    samples.drop(columns="response").to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(InputError, match=r"bad.parquet: columns \['response'\]"):
        embed_samples_file(tiny_model_dir, tmp_path / "bad.parquet", tmp_path / "x.parquet", max_length=32)


# ------------------------------------------------------------------------------------------- workflow


def flawed_records(n: int) -> list[dict]:
    """Tiny records, some calculations, every third with a wrong answer labelled as a flaw (as in the embedded
    default)."""
    records = tiny_records(n)
    for i, record in enumerate(records):
        if i % 4 == 1:  # a calculation instruction by the definition of selectit.paper.stats
            record["instruction"] = f"Calculate {i} + {i + 2}."
            record["output"] = f"{i} + {i + 2} = {2 * i + 2}."
        if i % 3 == 0:
            record["output"] = "It is 3."
            record["flaw"] = "wrong_answer"
    return records


def test_figures_workflow_and_report(tiny_models, tmp_path):
    """figures/all on a tiny config without training: the four figures that need no trained model, their
    index, and an HTML report holding every figure with its caption."""
    workdir = tmp_path / "wf"
    models = {"tinya": tiny_models["tinya"]}  # one rater, one shard: few torch jobs (each loads torch, ~10 s)
    paper = {"tsne": {"n": 10, "perplexity": 5, "seed": 0}, "trend_proportions": [0.25, 0.5, 1.0],
             "proportion": 0.25, "k_values": [1, 2]}  # K <= n_prompts (2) of the tiny config
    write_tiny_config(workdir, models, records=flawed_records(24), selection__proportions=[0.25], paper=paper,
                      datasets={"tiny": {"path": "data.json", "format": "alpaca", "n_shards": 1}})
    counts = job_counts(workdir, "figures/all")
    assert counts["figure_index"] == 1 and counts["figure"] == 4 and "train_subset" not in counts  # no data_quantity
    assert counts["embed_samples"] == 1
    start = time.monotonic()
    snakemake(workdir, "--cores", "2", "figures/all")
    print(f"figures/all on the tiny config: {time.monotonic() - start:.1f} s")
    names = ["length_and_calculation", "trends_vs_proportion", "tsne", "score_distributions"]
    for name in names:
        assert_figure_files(workdir / "figures", name)
    index = (workdir / "figures/all").read_text()
    for name in names:
        assert f"## {name}" in index
    assert "results/embeddings/tiny/tinya.parquet" in index and "results/subsets/tiny/judge/0.25.json" in index

    # the plotted values trace back to the pipeline's files
    samples = pd.read_parquet(workdir / "results/data/tiny/samples.parquet")
    lc = pd.read_csv(workdir / "figures/length_and_calculation.csv").set_index("method")
    from selectit.paper import stats

    assert lc.loc["full", "n"] == 24 and lc.loc["full", "calculation_share"] == pytest.approx(100 * 6 / 24)
    assert lc.loc["full", "mean_length"] == pytest.approx(stats.mean_length(samples.instruction, samples.response))
    chosen = json.loads((workdir / "results/subsets/tiny/selectit/0.25.json").read_text())
    assert lc.loc["selectit", "calculation_share"] == pytest.approx(
        stats.calculation_share([r["instruction"] for r in chosen]))
    sd = pd.read_csv(workdir / "figures/score_distributions.csv").set_index("level")
    flawed_ids = set(samples.loc[samples.flaw.notna(), "id"])
    kept = sum(r["id"] in flawed_ids for r in chosen)
    assert sd.loc["SelectIT, flawed records", "n_selected"] == kept
    assert sd.loc["SelectIT, flawed records", "percent_left_out"] == pytest.approx(100 * (1 - kept / len(flawed_ids)))
    tsne = pd.read_csv(workdir / "figures/tsne.csv")
    assert set(tsne["group"]) == {"Random", "SelectIT"}
    assert job_counts(workdir, "figures/all") == {}

    snakemake(workdir, "--report", "report.html", "figures/all")
    html = (workdir / "report.html").read_text(errors="replace")
    for name in names:
        assert f"{name}.png" in html
    assert "Figures" in html and "t-SNE (scikit-learn" in html
