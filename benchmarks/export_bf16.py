#!/usr/bin/env python
"""Copy a prepared model folder with its weights cast to bf16 safetensors (half the size of the fp32 folder),
or with no weights at all (--no-weights) for throughput runs where only the architecture matters.

The copy keeps every other file (config.json, tokenizer files, model.json, generation_config.json, chat
template); config.json gets "dtype"/"torch_dtype": "bfloat16", and legacy RoPE keys ("rope_theta",
"rope_local_base_freq") are added where only the transformers-5 "rope_parameters" form is present, so an older
transformers reads the same RoPE bases. model.json gets "saved_dtype": "bfloat16" (or "weights": "none").

Size: Gemma-3-270M is ~1.07 GB in fp32 -> ~0.54 GB in bf16 (its tokenizer.json is 33 MB); SmolLM2-135M
~0.54 GB -> ~0.27 GB. The device tool moves at most 64 MiB of working tree per call, so neither bf16 folder can
travel to a lent GPU machine; --no-weights (config + tokenizer, ~34 MB for Gemma-3) can, and
benchmarks/rating_throughput.py then builds the model from config.json with seeded random weights (same shapes,
same FLOPs and memory traffic, so the same throughput; the scores themselves are meaningless).

Examples:
  python benchmarks/export_bf16.py /tmp/models/gemma3 gpu_models/gemma3             # bf16 weights
  python benchmarks/export_bf16.py --no-weights /tmp/models/gemma3 gpu_models/gemma3 # config + tokenizer only
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")


def legacy_rope_keys(config: dict) -> dict:
    """Add transformers-4 RoPE keys next to transformers-5 `rope_parameters` (values unchanged)."""
    rope = config.get("rope_parameters")
    if not isinstance(rope, dict):
        return config
    if "rope_theta" in rope and "rope_theta" not in config:  # one set of parameters for every layer
        config["rope_theta"] = rope["rope_theta"]
    full, local = rope.get("full_attention"), rope.get("sliding_attention")
    if isinstance(full, dict) and "rope_theta" in full:  # Gemma-3: per layer type
        config.setdefault("rope_theta", full["rope_theta"])
    if isinstance(local, dict) and "rope_theta" in local:
        config.setdefault("rope_local_base_freq", local["rope_theta"])
    return config


def export(src: Path, dst: Path, weights: bool = True) -> dict:
    import torch
    from safetensors.torch import load_file, save_file

    if not (src / "config.json").is_file():
        raise SystemExit(f"{src} has no config.json: not a prepared model folder")
    if dst.exists():
        raise SystemExit(f"{dst} exists; remove it first")
    tmp = dst.with_name(dst.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for path in sorted(src.iterdir()):
        if path.is_file() and not path.name.endswith(WEIGHT_SUFFIXES) and not path.name.endswith(".index.json"):
            shutil.copy2(path, tmp / path.name)
    if weights:
        shards = sorted(src.glob("*.safetensors"))
        if not shards:
            raise SystemExit(f"{src} holds no *.safetensors weights")
        for shard in shards:
            tensors = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v).contiguous()
                       for k, v in load_file(shard).items()}
            save_file(tensors, tmp / shard.name, metadata={"format": "pt"})
        for index in src.glob("*.safetensors.index.json"):
            shutil.copy2(index, tmp / index.name)
    config = json.loads((tmp / "config.json").read_text())
    config["dtype"] = config["torch_dtype"] = "bfloat16"
    (tmp / "config.json").write_text(json.dumps(legacy_rope_keys(config), indent=2) + "\n")
    info_path = tmp / "model.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {"name": src.name}
    if weights:
        info["saved_dtype"] = "bfloat16"
    else:
        info["weights"] = "none"
        info["note"] = "config and tokenizer only: benchmarks/rating_throughput.py builds seeded random weights"
    info["exported_from"] = str(src)
    info_path.write_text(json.dumps(info, indent=2) + "\n")
    tmp.rename(dst)
    size = sum(p.stat().st_size for p in dst.iterdir() if p.is_file())
    return {"folder": str(dst), "bytes": size, "weights": "bf16" if weights else "none"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", type=Path, help="prepared model folder (selectit prepare-model output, fp32 safetensors)")
    p.add_argument("dst", type=Path, help="new folder to write (must not exist)")
    p.add_argument("--no-weights", action="store_true",
                   help="copy config, tokenizer and model.json only (small enough for the device tool's 64 MiB)")
    args = p.parse_args(argv)
    result = export(args.src, args.dst, weights=not args.no_weights)
    print(json.dumps(result))
    if result["bytes"] > 64 * 2**20:
        print(f"note: {result['bytes'] / 2**20:.0f} MiB is over the device tool's 64 MiB working-tree limit; "
              "use --no-weights for a GPU throughput run", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
