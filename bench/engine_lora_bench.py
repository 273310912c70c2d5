"""Decoding throughput of the transformers engine in process: base vs one adapter vs mixed adapters,
with the lone-adapter merge and without it (the hooked path for every batch).

No stack, no network: the figures isolate the engine's batch (what LoRA costs) from the gateway
and gRPC, which `serve_bench.py` measures end to end. Two engines on one base model, one merging
a lone adapter into the weights and one that never merges, with the same random rank-16
all-linear adapters (as `serve_bench.py` makes them); N requests queued together, each decoding
up to `--tokens` greedy tokens. The phases alternate, `--repeats` times, and the best tokens/s of
each counts (the least disturbed by other load on the machine). Last line: one JSON object with
the figures, the ratios to base and the load average during the run.

    .venv/bin/python bench/engine_lora_bench.py [--model smollm2-135m-instruct] [--streams 32] [--tokens 64]
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
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model_dir = ensure_base_model(args.model, CommonSettings().model_cache)
    merging = HFEngine(model_dir, device="cpu", max_batch=max(64, args.streams))
    hooked = HFEngine(model_dir, device="cpu", max_batch=max(64, args.streams), merge_after_passes=None)
    names = [f"a{i}" for i in range(args.adapters)]
    work = Path(tempfile.mkdtemp(prefix="engine-lora-bench-"))  # kept while an adapter may reload
    for i, name in enumerate(names):
        folder = make_adapter(model_dir, work / name, seed=i)
        merging.load_adapter(name, folder)
        hooked.load_adapter(name, folder)
    phases = {
        "base": (merging, [None]),
        "one_adapter_merged": (merging, names[:1]),
        "one_adapter_hooked": (hooked, names[:1]),
        "mixed_adapters": (merging, names),
        "mixed_adapters_hooked": (hooked, names),
    }
    for engine in (merging, hooked):
        throughput(engine, [None], 4, 4)  # warm-up
    best = dict.fromkeys(phases, 0.0)
    load = []
    for _ in range(args.repeats):
        for phase, (engine, adapters) in phases.items():
            best[phase] = max(best[phase], throughput(engine, adapters, args.streams, args.tokens))
            load.append(os.getloadavg()[0])
    merges = merging.adapters.merge.merges
    merging.close()
    hooked.close()
    shutil.rmtree(work)
    figures = {
        "model": args.model,
        "streams": args.streams,
        "tokens": args.tokens,
        "adapters_mixed": args.adapters,
        **{f"{phase}_tokens_per_s": round(tps, 1) for phase, tps in best.items()},
        **{f"{phase}_vs_base": round(best[phase] / best["base"], 2) for phase in list(phases)[1:]},
        "merges": merges,
        "torch_threads": torch.get_num_threads(),
        "load_average_1m": [round(x, 2) for x in load],
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
