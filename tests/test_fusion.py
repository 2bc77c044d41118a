"""Merging refuses incomplete or duplicated ratings and names the keys; fusion equals the equations."""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from selectit import scoring
from selectit.errors import IncompleteRatingsError
from selectit.fusion import fuse, merge_model_ratings
from selectit.selection import parse_method, select_ids
from selectit.errors import InputError

REPO = Path(__file__).resolve().parents[1]


def write_ratings(path, ids, prompt_ids, seed=0):
    rng = np.random.default_rng(seed)
    rows = [(i, p) for i in ids for p in prompt_ids]
    pq.write_table(pa.table({
        "id": [r[0] for r in rows], "prompt_id": [r[1] for r in rows],
        "logits": [rng.normal(size=5).astype(np.float32).tolist() for _ in rows],
        "score_mass": [0.5] * len(rows), "n_tokens": [10] * len(rows), "truncated": [False] * len(rows),
    }), path)


def test_missing_and_duplicated_keys_are_named(tmp_path):
    ids, prompts = ["s1", "s2", "s3"], ["pa", "pb"]
    write_ratings(tmp_path / "a.parquet", ["s1", "s2"], prompts)
    with pytest.raises(IncompleteRatingsError, match=r"2 missing \(sample, prompt, model=m7\) keys: \(sample s3, prompt pa\)"):
        merge_model_ratings([tmp_path / "a.parquet"], ids, prompts, "m7")
    write_ratings(tmp_path / "b.parquet", ["s2", "s3"], prompts)
    with pytest.raises(IncompleteRatingsError, match=r"rated more than once: \(sample s2, prompt pa\)"):
        merge_model_ratings([tmp_path / "a.parquet", tmp_path / "b.parquet"], ids, prompts, "m7")
    write_ratings(tmp_path / "c.parquet", ["s3"], prompts)
    logits, _ = merge_model_ratings([tmp_path / "c.parquet", tmp_path / "a.parquet"], ids, prompts, "m7")
    assert logits.shape == (3, 2, 5)
    direct = pq.read_table(tmp_path / "c.parquet").to_pandas()
    np.testing.assert_array_equal(logits[2, 1], direct["logits"][1])  # aligned to (sample s3, prompt pb)


def test_fuse_equals_equations_by_hand():
    rng = np.random.default_rng(3)
    logits = {"small": rng.normal(size=(6, 3, 5)), "big": rng.normal(size=(6, 3, 5))}
    weights = dict(zip(["small", "big"], scoring.param_weights([1, 3])))
    out = fuse([f"s{i}" for i in range(6)], logits, ["p1", "p2", "p3"], weights, 0.2, "paper")
    tok = {m: scoring.token_level(l.reshape(18, 5)).reshape(6, 3) for m, l in logits.items()}
    sent = {m: scoring.sentence_level(t, 0.2) for m, t in tok.items()}
    np.testing.assert_allclose(out["selectit"], 0.25 * sent["small"] + 0.75 * sent["big"])
    np.testing.assert_allclose(out["sentence_r"], sent["big"])
    np.testing.assert_allclose(out["token_r"], tok["big"][:, 0])
    np.testing.assert_allclose(out["model_r"], 0.25 * tok["small"][:, 0] + 0.75 * tok["big"][:, 0])
    k2 = fuse([f"s{i}" for i in range(6)], logits, ["p1", "p2", "p3"], weights, 0.2, "paper", n_prompts=2)
    np.testing.assert_allclose(k2["sentence/big"], scoring.sentence_level(tok["big"][:, :2], 0.2))


def test_method_names():
    assert parse_method("selectit-alpha0.4-k3").alpha == 0.4
    assert parse_method("selectit-k3").k == 3
    for bad in ["magic", "random-alpha0.2", "token_r-alpha0.4", "model_r-k3"]:  # token/model-level use no alpha, K
        with pytest.raises(InputError):
            parse_method(bad)


def test_random_unselected_is_disjoint_from_selectit():
    import pandas as pd

    n = 50
    samples = pd.DataFrame({"id": [f"s{i}" for i in range(n)], "response": ["x" * i for i in range(n)]})
    scores = pd.DataFrame({"id": samples["id"], "score": np.random.default_rng(0).normal(size=n)})
    top = set(select_ids(parse_method("selectit"), 0.2, samples, scores, 0))
    rest = set(select_ids(parse_method("random_unselected"), 0.2, samples, scores, 0))
    assert len(top) == len(rest) == 10 and not top & rest
    longest = select_ids(parse_method("length"), 0.1, samples, scores, 0)
    assert longest == ["s49", "s48", "s47", "s46", "s45"]


def test_file_chain_equals_fuse_and_computes_each_level_once(tmp_path):
    """merge -> token -> sentence -> level -> fused (the workflow's scoring DAG) gives exactly what the
    in-memory fuse() gives, for the configured levels and for an alpha / K sweep point."""
    import json

    import pandas as pd

    from selectit import fusion

    ids, prompts = [f"s{i}" for i in range(8)], ["pa", "pb", "pc"]
    samples = pd.DataFrame({"id": ids[::-1], "index": list(range(8))[::-1], "instruction": ids, "response": ids})
    pq.write_table(pa.Table.from_pandas(samples, preserve_index=False), tmp_path / "samples.parquet")
    thetas = {"small": 1e6, "big": 3e6}
    tok, sent, infos, logits = {}, {}, {}, {}
    for seed, model in enumerate(thetas):
        write_ratings(tmp_path / f"{model}.ratings.parquet", ids, prompts, seed=seed)
        fusion.merge_model_files([tmp_path / f"{model}.ratings.parquet"], tmp_path / "samples.parquet", prompts,
                                 model, tmp_path / f"{model}.logits.parquet")
        logits[model] = fusion.read_logits(tmp_path / f"{model}.logits.parquet")[2]
        fusion.token_file(tmp_path / f"{model}.logits.parquet", "paper", tmp_path / f"{model}.token.parquet")
        tok[model] = tmp_path / f"{model}.token.parquet"
        for k, alpha in [(3, 0.2), (2, 0.7)]:
            fusion.sentence_file(tok[model], k, alpha, tmp_path / f"{model}.k{k}-{alpha}.parquet")
        sent[model] = tmp_path / f"{model}.k3-0.2.parquet"
        infos[model] = tmp_path / f"{model}.json"
        infos[model].write_text(json.dumps({"theta": thetas[model], "fingerprint": model}))
    levels = {}
    for level in ("token_r", "sentence_r", "model_r", "selectit"):
        source = tok if level in ("token_r", "model_r") else sent
        levels[level] = tmp_path / f"{level}.parquet"
        fusion.level_file(level, source, infos, "param", levels[level])
    fused = fusion.fused_file(tmp_path / "samples.parquet", tok, sent, levels, 3, tmp_path / "fused.parquet")
    order = sorted(range(8), key=lambda i: samples["index"][i])
    sample_ids = samples["id"][order].tolist()
    weights = {"small": 0.25, "big": 0.75}
    expected = fuse(sample_ids, logits, prompts, weights, 0.2, "paper")
    assert fused["id"].tolist() == sample_ids
    pd.testing.assert_frame_equal(fused.drop(columns="index"), expected, check_exact=True)
    fusion.level_file("selectit-alpha0.7-k2", {m: tmp_path / f"{m}.k2-0.7.parquet" for m in thetas}, infos, "param",
                      tmp_path / "sweep.parquet")
    sweep = fuse(sample_ids, logits, prompts, weights, 0.7, "paper", n_prompts=2)
    np.testing.assert_array_equal(pq.read_table(tmp_path / "sweep.parquet").column("score").to_numpy(),
                                  sweep["selectit"].to_numpy())
    meta = json.loads(pq.read_schema(tmp_path / "sweep.parquet").metadata[b"selectit"])
    assert meta["alpha"] == 0.7 and meta["k"] == 2 and meta["prompt_ids"] == ["pa", "pb"]


def test_cli_select_reads_each_level_from_the_fused_table(tmp_path):
    """`python -m selectit select` on a score table from `score`: each level under its own column."""
    import json

    import pandas as pd

    from selectit.cli import build_parser

    n = 20
    rng = np.random.default_rng(1)
    samples = pd.DataFrame({"id": [f"s{i}" for i in range(n)], "index": range(n),
                            "instruction": ["q"] * n, "response": ["r" * (i % 7) for i in range(n)]})
    pq.write_table(pa.Table.from_pandas(samples, preserve_index=False), tmp_path / "samples.parquet")
    scores = samples[["id", "index"]].assign(**{c: rng.normal(size=n) for c in ("token_r", "model_r", "selectit")})
    pq.write_table(pa.Table.from_pandas(scores, preserve_index=False), tmp_path / "scores.parquet")
    for method, column in [("token_r", "token_r"), ("selectit", "selectit"), ("model_r", "model_r")]:
        out = tmp_path / f"{method}.json"
        args = build_parser().parse_args(["select", "--samples", str(tmp_path / "samples.parquet"), "--scores",
                                          str(tmp_path / "scores.parquet"), "--method", method,
                                          "--proportion", "0.25", "--out", str(out)])
        args.func(args)
        top = scores.sort_values(column, ascending=False)["id"][:5].tolist()
        assert [r["id"] for r in json.loads(out.read_text())] == top
    args = build_parser().parse_args(["select", "--samples", str(tmp_path / "samples.parquet"), "--scores",
                                      str(tmp_path / "scores.parquet"), "--method", "selectit-alpha0.4",
                                      "--proportion", "0.25", "--out", str(tmp_path / "x.json")])
    with pytest.raises(InputError, match="fuse again"):
        args.func(args)


# ------------------------------------------------------ the released code at other K (issue 14, item 5)

SCORE_IDS = [11, 23, 37, 41, 58]  # where the score tokens "1".."5" sit in a 64-token toy vocabulary


def released_replay(vocab_logits, k, alpha, weights=(7 / 20, 13 / 20, 70 / 90)):
    """An independent replay of the released model_level.py after its forward passes, step by step on
    full-vocabulary logits: rows in its sample-major order (sample i, prompt j at i * k + j), a float32
    softmax over the vocabulary, the five score-token probabilities as Python floats, exp(p / sum p)
    renormalised, then its nested loops (k classes, / (k - 1)), mean / (1 + alpha * std), 7/20, 13/20, 70/90."""
    per_model = []
    for logits in vocab_logits:  # one (N, P, V) array per rater, in rater order
        n = logits.shape[0]
        pro = []
        for i in range(n):
            for j in range(k):
                row = logits[i, j].astype(np.float32)
                soft = np.exp(row - row.max())
                soft = soft / soft.sum()
                pro.append([float(soft[t]) for t in SCORE_IDS])
        pro_softmax = []
        for item in pro:
            first = [np.exp(x / sum(item)) for x in item]
            pro_softmax.append([x / sum(first) for x in first])
        sentence = []
        for i in range(len(pro_softmax) // k):
            token = []
            for row in range(i * k, (i + 1) * k):
                base = int(np.argmax(pro_softmax[row]))
                total = 0
                for c in range(k):
                    total += pro_softmax[row][base] - pro_softmax[row][c]
                token.append((base + 1) * (total / (k - 1)))
            sentence.append(np.average(token) / (1 + alpha * np.std(token)))
        per_model.append(sentence)
    return np.array([sum(w * s[i] for w, s in zip(weights, per_model)) for i in range(len(per_model[0]))])


def released_k_chain(tmp_path, vocab_logits, k, alpha, n_prompts=5):
    """The workflow's file chain under scoring.variant released: merge -> token -> sentence (with the logits
    exactly when k != score classes, as rules/common.smk's sentence_inputs gives them) -> level."""
    import json

    import pandas as pd

    from selectit import fusion

    n = vocab_logits[0].shape[0]
    ids, prompts = [f"s{i}" for i in range(n)], [f"p{j}" for j in range(n_prompts)]
    samples = pd.DataFrame({"id": ids, "index": range(n), "instruction": ids, "response": ids})
    pq.write_table(pa.Table.from_pandas(samples, preserve_index=False), tmp_path / "samples.parquet")
    sources, infos = {}, {}
    for r, logits in enumerate(vocab_logits):
        model = f"m{r}"
        rows = [(i, j) for i in range(n) for j in range(n_prompts)]
        pq.write_table(pa.table({
            "id": [ids[i] for i, _ in rows], "prompt_id": [prompts[j] for _, j in rows],
            "logits": [logits[i, j, SCORE_IDS].astype(np.float32).tolist() for i, j in rows]}),
            tmp_path / f"{model}.ratings.parquet")
        fusion.merge_model_files([tmp_path / f"{model}.ratings.parquet"], tmp_path / "samples.parquet", prompts,
                                 model, tmp_path / f"{model}.logits.parquet")
        fusion.token_file(tmp_path / f"{model}.logits.parquet", "released", tmp_path / f"{model}.token.parquet")
        sources[model] = tmp_path / f"{model}.k{k}.parquet"
        fusion.sentence_file(tmp_path / f"{model}.token.parquet", k, alpha, sources[model],
                             tmp_path / f"{model}.logits.parquet" if k != len(SCORE_IDS) else None)
        infos[model] = tmp_path / f"{model}.json"
        infos[model].write_text(json.dumps({"theta": 1e6 * (r + 1), "fingerprint": model}))
    fusion.level_file(f"selectit-k{k}", sources, infos, "released", tmp_path / "level.parquet")
    return pq.read_table(tmp_path / "level.parquet").column("score").to_numpy()


def top_overlap(a, b, proportion=0.2):
    return len(set(scoring.select_top(a, proportion)) & set(scoring.select_top(b, proportion))), \
        len(scoring.select_top(a, proportion))


@pytest.mark.parametrize("k", [3, 5])
def test_released_k_sweep_replays_the_released_code(tmp_path, k):
    """selectit-k3 under `released` computes what the released model_level.py computes at -k 3 (k prompts and
    k score classes), and K = 5 is unchanged; checked against a literal replay on full-vocabulary logits."""
    rng = np.random.default_rng(40 + k)
    vocab = [rng.normal(0, 2.5, size=(60, 5, 64)).astype(np.float32) for _ in range(3)]
    ours = released_k_chain(tmp_path, vocab, k, 0.2)
    theirs = released_replay(vocab, k, 0.2)
    kept, size = top_overlap(ours, theirs)
    print(f"K = {k}: max |delta| {np.abs(ours - theirs).max():.2e}, top 20 % overlap {kept}/{size}")
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)
    assert kept == size == 12
    assert np.isfinite(ours).all()


def test_released_k3_is_not_the_token_file_at_k3(tmp_path):
    """The replay is needed: prompts 1..3 of the token file (Eq. 2-3 over all five classes) give other
    scores than the released code's three classes."""
    rng = np.random.default_rng(9)
    vocab = [rng.normal(0, 2.5, size=(60, 5, 64)).astype(np.float32) for _ in range(3)]
    ours = released_k_chain(tmp_path, vocab, 3, 0.2)
    token_only = pq.read_table(tmp_path / "m0.token.parquet").to_pandas()
    assert not np.allclose(scoring.sentence_level(token_only[["p0", "p1", "p2"]].to_numpy(), 0.2) * (7 / 20),
                           pq.read_table(tmp_path / "m0.k3.parquet").column("sentence").to_numpy() * (7 / 20))
    meta = json.loads(pq.read_schema(tmp_path / "m0.k3.parquet").metadata[b"selectit"])
    assert meta["score_classes"] == 3 and meta["variant"] == "released"
    assert np.isfinite(ours).all()


def test_released_k_in_memory_fuse_agrees_with_the_file_chain(tmp_path):
    rng = np.random.default_rng(5)
    vocab = [rng.normal(0, 2.5, size=(30, 5, 64)).astype(np.float32) for _ in range(3)]
    chain = released_k_chain(tmp_path, vocab, 3, 0.4)
    from selectit import fusion

    logits = {f"m{r}": fusion.read_logits(tmp_path / f"m{r}.logits.parquet")[2] for r in range(3)}
    weights = fusion.resolve_weights(list(logits), {}, "released")
    fused = fuse([f"s{i}" for i in range(30)], logits, [f"p{j}" for j in range(5)], weights, 0.4, "released",
                 n_prompts=3)
    np.testing.assert_array_equal(fused["selectit"].to_numpy(), chain)


def test_sentence_file_refuses_the_replay_on_paper_token_scores(tmp_path):
    from selectit import fusion

    rng = np.random.default_rng(2)
    released_k_chain(tmp_path, [rng.normal(size=(4, 5, 64)).astype(np.float32) for _ in range(3)], 3, 0.2)
    fusion.token_file(tmp_path / "m0.logits.parquet", "paper", tmp_path / "paper.token.parquet")
    with pytest.raises(InputError, match="released token scores"):
        fusion.sentence_file(tmp_path / "paper.token.parquet", 3, 0.2, tmp_path / "x.parquet",
                             tmp_path / "m0.logits.parquet")


def released_config(**scoring_values):
    return {"n_prompts": 5, "score_levels": 5, "scoring": {"variant": "released", "alpha": 0.2, **scoring_values}}


def test_released_k1_stops_when_the_dag_is_built():
    from selectit.methods import resolve

    for name in ("selectit-k1", "sentence_r-alpha0.4-k1"):
        with pytest.raises(InputError, match=rf"method '{name}' at K = 1 under scoring.variant 'released'.*K - 1"):
            resolve(name, released_config())
    with pytest.raises(InputError, match="method 'selectit' at K = 1"):
        resolve("selectit", {**released_config(), "n_prompts": 1})
    with pytest.raises(InputError, match="score_levels is 3"):
        resolve("selectit-k4", {**released_config(), "score_levels": 3})
    assert resolve("selectit-k1", {**released_config(), "scoring": {"variant": "paper"}}).k == 1
    assert resolve("selectit-k3", released_config()).k == 3
    assert resolve("token_r", {**released_config(), "n_prompts": 1}).k is None  # token level: no K


def test_model_weights_released_preset():
    from selectit.fusion import RELEASED_WEIGHTS, resolve_weights

    got = resolve_weights(["b7", "b13", "b70"], {"b7": 7e9, "b13": 13e9, "b70": 70e9}, "released")
    assert got == {"b7": 7 / 20, "b13": 13 / 20, "b70": 70 / 90} and RELEASED_WEIGHTS == (7 / 20, 13 / 20, 70 / 90)
    for models in (["a", "b"], ["a", "b", "c", "d"]):
        with pytest.raises(InputError, match="scoring.model_weights 'released'.*exactly three raters"):
            resolve_weights(models, {m: 1.0 for m in models}, "released")


def test_token_prompt_setting_reaches_only_token_r_and_model_r(tmp_path):
    import random

    from selectit import fusion
    from selectit.methods import level_settings, token_prompt

    base = {"n_prompts": 5, "scoring": {}}
    assert token_prompt(base) == 1  # the schema default: today's first line
    assert token_prompt({**base, "scoring": {"token_prompt": 4}}) == 4
    for bad in (0, 6, "3", True):
        with pytest.raises(InputError, match="scoring.token_prompt"):
            token_prompt({**base, "scoring": {"token_prompt": bad}})
    lines = [f"prompt line {i}\n" for i in range(1, 6)]
    for seed in range(20):  # the released token_level.py's random.choice(readlines()), seeded
        random.seed(seed)
        expected = lines.index(random.choice(lines)) + 1
        cfg = {**base, "scoring": {"token_prompt": "random", "token_prompt_seed": seed}}
        assert token_prompt(cfg) == token_prompt(cfg) == expected
    values = {"token_prompt": 4}
    assert level_settings("token_r", values) == level_settings("model_r", values) == values
    for name in ("sentence_r", "selectit", "selectit-k3", "sentence_r-alpha0.4"):
        assert level_settings(name, values) == {}

    rng = np.random.default_rng(8)
    released_k_chain(tmp_path, [rng.normal(size=(10, 5, 64)).astype(np.float32) for _ in range(3)], 5, 0.2)
    tokens = {f"m{r}": tmp_path / f"m{r}.token.parquet" for r in range(3)}
    infos = {f"m{r}": tmp_path / f"m{r}.json" for r in range(3)}
    logits = {m: fusion.read_logits(tmp_path / f"{m}.logits.parquet")[2] for m in tokens}
    weights = fusion.weights_from_files(infos, "param")
    expected = fuse([f"s{i}" for i in range(10)], logits, [f"p{j}" for j in range(5)], weights, 0.2, "released",
                    token_level_prompt=3)
    for level in ("token_r", "model_r"):
        fusion.level_file(level, tokens, infos, "param", tmp_path / f"{level}.parquet", token_prompt=4)
        np.testing.assert_array_equal(pq.read_table(tmp_path / f"{level}.parquet").column("score").to_numpy(),
                                      expected[level].to_numpy())
        meta = json.loads(pq.read_schema(tmp_path / f"{level}.parquet").metadata[b"selectit"])
        assert meta["token_prompt"] == 4 and meta["prompt_ids"] == ["p3"]
    with pytest.raises(InputError, match="scoring.token_prompt"):
        fusion.level_file("token_r", tokens, infos, "param", tmp_path / "x.parquet", token_prompt=6)


def test_schema_accepts_the_new_settings():
    import yaml
    from snakemake.utils import validate

    SCHEMA = str(REPO / "schemas/config.schema.yaml")
    cfg = yaml.safe_load(open(REPO / "config.yaml"))
    cfg["scoring"].update(model_weights="released", token_prompt="random", token_prompt_seed=3)
    validate(cfg, SCHEMA)
    assert cfg["scoring"]["token_prompt"] == "random"
    defaults = yaml.safe_load(open(REPO / "config.yaml"))
    validate(defaults, SCHEMA)
    assert defaults["scoring"]["token_prompt"] == 1 and defaults["scoring"]["token_prompt_seed"] == 0
    for bad in ({"token_prompt": 0}, {"token_prompt": "first"}, {"model_weights": "relased"}):
        broken = yaml.safe_load(open(REPO / "config.yaml"))
        broken["scoring"].update(bad)
        with pytest.raises(Exception):
            validate(broken, SCHEMA)


def dry_run(tmp_path, *targets, **scoring_values):
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    cfg = yaml.safe_load(open(REPO / "config.yaml"))
    cfg["scoring"].update(scoring_values)
    cfg["paper"]["k_values"] = [3, 5]
    cfg["selection"]["methods"] = ["selectit", "selectit-k3", "token_r"]
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    exe = str(Path(sys.executable).parent / "snakemake")
    return subprocess.run([exe, "-n", *targets, "--configfile", str(tmp_path / "cfg.yaml")], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_released_sentence_jobs_read_the_logits_only_at_other_k(tmp_path):
    targets = [f"results/scores/default/levels/{m}.parquet" for m in ("selectit-k3", "selectit")]
    for variant in ("released", "paper"):
        out = dry_run(tmp_path, *targets, variant=variant).stdout
        jobs = [j for j in out.split("rule ")[1:] if j.startswith("sentence_scores:")]
        assert len(jobs) == 4, out[-3000:]
        for job in jobs:
            inputs = job.split("input:")[1].split("\n")[0]
            assert ("logits.parquet" in inputs) == (variant == "released" and "/k3-" in job), job


def test_broken_released_settings_stop_the_dry_run(tmp_path):
    proc = dry_run(tmp_path, model_weights="released")
    assert proc.returncode != 0 and "scoring.model_weights 'released'" in proc.stdout + proc.stderr
    import yaml

    cfg = yaml.safe_load((tmp_path / "cfg.yaml").read_text())
    cfg["scoring"].update(variant="released", model_weights="param")
    cfg["selection"]["methods"].append("selectit-k1")
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    import subprocess
    import sys
    from pathlib import Path

    proc = subprocess.run([str(Path(sys.executable).parent / "snakemake"), "-n", "--configfile",
                           str(tmp_path / "cfg.yaml")], cwd=REPO, capture_output=True, text=True, timeout=300)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "config selection.methods: method 'selectit-k1' at K = 1" in text
