"""Decoding throughput of the transformers engine in process: base vs one adapter vs 8 adapters mixed.

No stack, no network: the figures isolate the engine's batch (what LoRA costs) from the gateway
and gRPC, which `serve_bench.py` measures end to end. One engine (one per process: two engines in
one process measured each other's paths unreliably), random rank-16 all-linear adapters (as
`serve_bench.py` makes them); N requests queued together, each decoding up to `--tokens` greedy
tokens. The phases alternate, `--repeats` times, and the best tokens/s of each counts (the least
disturbed by other load on the machine). `--no-merge` never merges a lone adapter into the
weights (the hooked path for every batch): run it beside the default to see what merging gives.
Last line: one JSON object with the figures, the ratios to base and the load average.

    .venv/bin/python bench/engine_lora_bench.py [--model smollm2-135m-instruct] [--streams 32] [--tokens 64]
    .venv/bin/python bench/engine_lora_bench.py --no-merge
"""

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from serve_bench import PROMPTS, make_adapter
from tunery_common.basemodels import ensure_base_model
from tunery_common.settings import CommonSettings
from tunery_inference.engines.hf import GenerationParams, HFEngine


def throughput(engine: HFEngine, adapters: list[str | None], streams: int, tokens: int) -> float:
    params = GenerationParams(max_tokens=tokens, temperature=0)
    started = time.perf_counter()
    with engine.model_lock:  # all requests are queued before the first step: one batch
        running = [
            engine.stream(
                [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}], adapters[i % len(adapters)], params
            )
            for i in range(streams)
        ]
    generated = 0
    for stream in running:
        *_, completion = stream
        generated += completion.completion_tokens
    return generated / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--adapters", type=int, default=8, help="adapters in the mixed phase")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--no-merge", action="store_true", help="never merge a lone adapter")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model_dir = ensure_base_model(args.model, CommonSettings().model_cache)
    merge = {"merge_after_passes": None} if args.no_merge else {}
    engine = HFEngine(model_dir, device="cpu", max_batch=max(64, args.streams), **merge)
    names = [f"a{i}" for i in range(args.adapters)]
    work = Path(tempfile.mkdtemp(prefix="engine-lora-bench-"))  # kept while an adapter may reload
    for i, name in enumerate(names):
        engine.load_adapter(name, make_adapter(model_dir, work / name, seed=i))
    phases = {"base": [None], "one_adapter": names[:1], "mixed_adapters": names}
    throughput(engine, [None], 4, 4)  # warm-up
    best = dict.fromkeys(phases, 0.0)
    load = []
    for _ in range(args.repeats):
        for phase, adapters in phases.items():
            best[phase] = max(best[phase], throughput(engine, adapters, args.streams, args.tokens))
            load.append(os.getloadavg()[0])
    merges = engine.adapters.merge.merges
    engine.close()
    shutil.rmtree(work)
    figures = {
        "model": args.model,
        "streams": args.streams,
        "tokens": args.tokens,
        "adapters_mixed": args.adapters,
        "merge": not args.no_merge,
        **{f"{phase}_tokens_per_s": round(tps, 1) for phase, tps in best.items()},
        "one_adapter_vs_base": round(best["one_adapter"] / best["base"], 2),
        "mixed_adapters_vs_base": round(best["mixed_adapters"] / best["base"], 2),
        "merges": merges,
        "torch_threads": torch.get_num_threads(),
        "load_average_1m": [round(x, 2) for x in load],
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
