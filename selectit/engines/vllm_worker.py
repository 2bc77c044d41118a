"""The vLLM side of ``selectit.engines.vllm``: run by the vLLM environment's Python (``make setup-vllm``), as a
file, not as part of the package (that environment has vLLM and its own transformers, not this project's
dependencies). It loads one model into ``vllm.LLM`` and answers the engine's requests over a
``multiprocessing.connection`` until told to close or until its parent goes away.

Everything it receives and sends is token ids and plain numbers: tokenisation, truncation and decoding stay in the
main environment, so both engines see the same ids. Standard library and vLLM only.

    python vllm_worker.py ADDRESS AUTHKEY_HEX SETTINGS_JSON
"""

from __future__ import annotations

import json
import sys
import traceback
from multiprocessing.connection import Client


def build_llm(settings: dict):
    from vllm import LLM

    args = {"model": settings["model_dir"], "dtype": settings["dtype"], "seed": int(settings.get("seed", 0)),
            "enable_prefix_caching": True, "tensor_parallel_size": int(settings.get("tensor_parallel_size", 1)),
            "enforce_eager": bool(settings.get("enforce_eager", False)), "trust_remote_code": False}
    for key in ("max_model_len", "gpu_memory_utilization", "max_num_batched_tokens", "max_num_seqs", "load_format"):
        if settings.get(key) is not None:
            args[key] = settings[key]
    return LLM(**args)


def score(llm, rows: list[list[int]], token_ids: list[int]) -> dict:
    """Full-vocabulary log-probabilities of ``token_ids`` at the position after each row."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    params = SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=list(token_ids), detokenize=False)
    outs = llm.generate([TokensPrompt(prompt_token_ids=r) for r in rows], params, use_tqdm=False)
    values = []
    for out in outs:
        seen = out.outputs[0].logprobs[0]
        values.append([float(seen[t].logprob) for t in token_ids])
    return {"logprobs": values}


def prompt_logprobs(llm, seqs: list[list[int]], starts: list[int]) -> dict:
    """Per position from ``starts[i]`` on: the log-probability of the sequence's own token, and whether it was the
    most likely one (vLLM's prompt log-probabilities)."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1, detokenize=False)
    outs = llm.generate([TokensPrompt(prompt_token_ids=s) for s in seqs], params, use_tqdm=False)
    logprobs, greedy = [], []
    for seq, start, out in zip(seqs, starts, outs):
        per = out.prompt_logprobs
        lp, top = [], []
        for pos in range(max(start, 1), len(seq)):
            entry = per[pos][seq[pos]]
            lp.append(float(entry.logprob))
            top.append(entry.rank == 1)
        logprobs.append(lp)
        greedy.append(top)
    return {"logprobs": logprobs, "greedy": greedy}


def generate(llm, prompts: list[list[int]], requests: list[dict]) -> dict:
    """Continuations (token ids) of each prompt under its own sampling settings (``SamplingParams`` keywords)."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    params = [SamplingParams(**r) for r in requests]
    outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
    return {"token_ids": [[list(o.token_ids) for o in out.outputs] for out in outs],
            "finish_reasons": [[o.finish_reason for o in out.outputs] for out in outs]}


def serve(conn, llm) -> None:
    ops = {"score": score, "prompt_logprobs": prompt_logprobs, "generate": generate}
    while True:
        try:
            op, kwargs = conn.recv()
        except (EOFError, OSError):  # the main process went away
            return
        if op == "close":
            conn.send(("ok", {}))
            return
        try:
            conn.send(("ok", ops[op](llm, **kwargs)))
        except Exception:  # noqa: BLE001 - sent back whole, raised in the main process
            conn.send(("error", traceback.format_exc()))


def main(argv: list[str]) -> int:
    address, authkey, settings = argv[0], bytes.fromhex(argv[1]), json.loads(argv[2])
    conn = Client(address, family="AF_UNIX", authkey=authkey)
    try:
        llm = build_llm(settings)
        import vllm

        conn.send(("ready", {"vllm": vllm.__version__, "max_model_len": llm.llm_engine.model_config.max_model_len}))
    except Exception:  # noqa: BLE001
        conn.send(("error", traceback.format_exc()))
        return 1
    serve(conn, llm)
    return 0


if __name__ == "__main__":  # vLLM spawns its engine process, which imports this file again
    sys.exit(main(sys.argv[1:]))
