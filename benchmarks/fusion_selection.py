"""Time fusion + selection at the paper's scale on synthetic logits (a benchmark, not a test).

52,002 samples x 5 prompts x 3 raters of random score-token logits (K = 5), written in the pipeline's own
formats (samples.parquet, one logits.parquet per model, model.json with theta), then timed:
  fuse        the workflow's scoring chain for SelectIT (selectit.fusion): token_file (Eq. 2-3) and sentence_file
              (Eq. 4) per rater, level_file (Eq. 5), from the three logits files
  select      selectit.selection.select_ids for SelectIT at the proportion (top 20 %)
  subset      selectit.selection.write_subset: Alpaca JSON + ShareGPT JSON + manifest of the selected records
  end_to_end  selectit.selection.make_subset_from_files on the level table, everything a select_subset job does
Target (issue #6): fusion + selection under 2 s. Prints a table and writes --out JSON.

  python benchmarks/fusion_selection.py [--samples 52002] [--prompts 5] [--models 3] [--repeat 3] [--out f.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere, without installing the package
    sys.path.insert(0, str(REPO))

from selectit.fusion import level_file, sentence_file, token_file  # noqa: E402
from selectit.atomic import write_parquet_atomic  # noqa: E402
from selectit.selection import make_subset_from_files, parse_method, select_ids, write_subset  # noqa: E402

THETAS = {"llama2_7b": 6.74e9, "llama2_13b": 13.0e9, "llama2_70b": 69.0e9}


def build(tmp: Path, n: int, n_prompts: int, n_models: int, k: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    ids = [f"s{i:06d}" for i in range(n)]
    words = rng.integers(5, 300, n)
    samples = pa.table({"id": ids, "index": np.arange(n), "instruction": [f"instruction {i}" for i in range(n)],
                        "response": ["word " * int(w) for w in words]})
    write_parquet_atomic(samples, tmp / "samples.parquet")
    (tmp / "report.json").write_text(json.dumps({"fingerprint": "synthetic"}))
    prompt_ids = [f"p{j:010x}" for j in range(n_prompts)]
    logits, infos = {}, {}
    for name in list(THETAS)[:n_models]:
        arr = rng.normal(0, 3, (n, n_prompts, k)).astype(np.float32)
        cols = {"id": ids, **{pid: list(arr[:, j, :]) for j, pid in enumerate(prompt_ids)}}
        logits[name] = tmp / f"{name}.logits.parquet"
        write_parquet_atomic(pa.table(cols), logits[name], {"model": name})
        infos[name] = tmp / f"{name}.model.json"
        infos[name].write_text(json.dumps({"theta": THETAS[name], "fingerprint": name}))
    return {"prompt_ids": prompt_ids, "logits": logits, "infos": infos}


def timed(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=52002)
    ap.add_argument("--prompts", type=int, default=5)
    ap.add_argument("--models", type=int, default=3, choices=[1, 2, 3])
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--proportion", type=float, default=0.2)
    ap.add_argument("--repeat", type=int, default=3, help="timed repeats; the best is reported")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        built = build(tmp, args.samples, args.prompts, args.models, args.k, args.seed)
        level = tmp / "selectit.level.parquet"

        def chain():
            sentences = {}
            for name, path in built["logits"].items():
                token_file(path, "paper", tmp / f"{name}.token.parquet")
                sentences[name] = tmp / f"{name}.sentence.parquet"
                sentence_file(tmp / f"{name}.token.parquet", args.prompts, 0.2, sentences[name])
            level_file("selectit", sentences, built["infos"], "param", level)
            return pd.read_parquet(level)

        t_fuse, scores = timed(chain, args.repeat)
        from selectit.fusion import read_samples

        samples = read_samples(tmp / "samples.parquet")
        method = parse_method("selectit")
        t_select, selected = timed(lambda: select_ids(method, args.proportion, samples, scores, 0), args.repeat)
        t_subset, _ = timed(lambda: write_subset(selected, samples, tmp / "a.json", tmp / "s.json", tmp / "m.json",
                                                 {}), args.repeat)
        t_e2e, _ = timed(lambda: make_subset_from_files(
            "selectit", args.proportion, tmp / "samples.parquet", tmp / "report.json", {}, tmp / "a.json",
            tmp / "s.json", tmp / "m.json", scores_path=level), args.repeat)
    result = {
        "samples": args.samples, "prompts": args.prompts, "models": args.models, "selected": len(selected),
        "seconds": {"fuse": t_fuse, "select": t_select, "subset": t_subset, "end_to_end": t_e2e},
        "fusion_plus_selection_s": t_fuse + t_select, "target_s": 2.0,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "load": os.getloadavg()[0]},
    }
    for k, v in result["seconds"].items():
        print(f"{k:12s} {v:7.3f} s")
    print(f"fusion + selection: {result['fusion_plus_selection_s']:.3f} s (target < 2 s), "
          f"{args.samples} x {args.prompts} x {args.models}, {len(selected)} selected, load {result['machine']['load']:.1f}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
