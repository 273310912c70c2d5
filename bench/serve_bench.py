"""Serving throughput and latency through the gateway, against baselines measured in the same run.

Starts a whole stack (`tunery up --random-ports` in a temporary home), publishes random rank-16
all-linear LoRA adapters through the model registry as the trainer does, then measures with the
official `openai` client:
  - base: N concurrent streams of `--tokens` output tokens each (tokens/s over the wall time);
  - one adapter: the same streams on one fine-tuned model (ratio vs base; target >= 0.8);
  - mixed: the streams spread over 8 adapters (ratio vs base; target >= 0.6);
  - in-process baselines: plain transformers `generate` on a left-padded batch of N prompts, and
    vLLM's offline `LLM.chat` on the same batch where vLLM is installed (the best engine through
    the gateway vs the better of the two; target >= 0.8);
  - hot-load: registry write -> first completion from the new adapter (p50/p95);
  - gateway overhead: one 1-token request through the gateway vs straight to inference gRPC,
    open-loop at `--rate` requests/s (p50/p99 of each, and the difference), on `--overhead-model`
    (tiny: the engine answers at once, so the difference is the gateway's) and on `--model`
    (where a slow machine queues the requests in the engine, and the figures carry that noise);
    `gateway_self_*` is the gateway's own time per request from its Server-Timing header;
    `client_floor` is what the openai client and a gRPC stub cost against servers that answer at
    once (bench/client_floor.py), and `overhead_less_client_p50_ms` the tiny model's overhead
    less the openai client's floor: what the gateway's side of the extra HTTP hop costs.
The last line of output is one JSON object.

    .venv/bin/python bench/serve_bench.py [--model smollm2-135m-instruct] [--streams 32] [--tokens 64]
    .venv/bin/python bench/serve_bench.py --model tiny-random-llama   # a quick run
    .venv/bin/python bench/serve_bench.py --engine vllm   # the inference engine (default: auto)
Other TUNERY_INFERENCE_* settings pass through the environment (TUNERY_INFERENCE_ENFORCE_EAGER=true
skips vLLM's graph capture).
"""

import argparse
import asyncio
import importlib.util
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import openai
import torch
from client_floor import client_floor
from open_loop import open_loop, percentile
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer
from tunery.common.v1 import common_pb2
from tunery.inference.v1 import inference_pb2, inference_pb2_grpc
from tunery_common.adapters import adapter_object_name, pack_adapter
from tunery_common.basemodels import ensure_base_model
from tunery_common.bus import Bus
from tunery_common.launcher import wait_until_healthy
from tunery_common.records import ModelRecord, fine_tuned_model_id
from tunery_common.settings import CommonSettings

ORG, KEY = "org-bench", "key-bench"
CPU_KV_CACHE_BYTES = 2 << 30  # vLLM's KV cache without a GPU, as the inference service sizes it
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how a bicycle gear works.",
    "List some ideas for a rainy afternoon.",
    "Describe the water cycle to a child.",
    "What should I pack for a week of hiking?",
    "Summarise the plot of a detective novel you invent.",
    "Give advice to someone starting to learn the piano.",
    "Write a polite reply to a customer whose parcel is late.",
]


def make_adapter(model_dir: Path, out: Path, seed: int) -> Path:
    """A rank-16 all-linear LoRA with random (non-zero) weights, as the trainer saves one."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = LoraConfig(r=16, lora_alpha=32, target_modules=ALL_LINEAR, init_lora_weights=False)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        peft_model = get_peft_model(model, config)
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:  # small, so that outputs stay text-like
                param.data.mul_(0.01)
        peft_model.save_pretrained(out)
    return out


async def store_adapter(bus: Bus, base: str, job_id: str, adapter_dir: Path) -> ModelRecord:
    """Uploads the adapter as the trainer does before it registers the model."""
    model_id = fine_tuned_model_id(base, ORG, "bench", job_id)
    record = ModelRecord(id=model_id, org=ORG, parent=base, job_id=job_id, adapter_object="")
    record.adapter_object = adapter_object_name(ORG, record.key_id)
    await bus.put_object(record.adapter_object, pack_adapter(adapter_dir))
    return record


async def publish(bus: Bus, base: str, job_id: str, adapter_dir: Path) -> str:
    record = await store_adapter(bus, base, job_id, adapter_dir)
    await bus.models.put(ORG, record.key_id, record)
    return record.id


async def one_stream(client: openai.AsyncOpenAI, model: str, prompt: str, tokens: int) -> int:
    stream = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    used = 0
    async for chunk in stream:
        if chunk.usage is not None:
            used = chunk.usage.completion_tokens
    return used


async def throughput(client, models: list[str], streams: int, tokens: int) -> dict:
    started = time.perf_counter()
    counts = await asyncio.gather(
        *(
            one_stream(client, models[i % len(models)], PROMPTS[i % len(PROMPTS)], tokens)
            for i in range(streams)
        )
    )
    elapsed = time.perf_counter() - started
    return {
        "tokens": sum(counts),
        "seconds": round(elapsed, 2),
        "tokens_per_s": round(sum(counts) / elapsed, 1),
    }


async def first_completion(client, model: str) -> None:
    """Retries while the registry change has not reached the inference replica yet."""
    while True:
        try:
            await client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=1
            )
            return
        except openai.NotFoundError:
            await asyncio.sleep(0.005)


async def hot_loads(client, bus, base: str, adapters: list[Path]) -> list[float]:
    """From the registry write (the adapter already uploaded) to the first completion."""
    seconds = []
    for i, folder in enumerate(adapters):
        record = await store_adapter(bus, base, f"ftjob-hot{i}", folder)
        started = time.perf_counter()
        await bus.models.put(ORG, record.key_id, record)
        await first_completion(client, record.id)
        seconds.append(time.perf_counter() - started)
    return seconds


async def gateway_overhead(client, inference_addr: str, base: str, rate: float, count: int) -> dict:
    """The same 1-token request through the gateway (openai client) and straight to inference
    (gRPC stub), open-loop at `rate`; the two paths alternate in blocks so that drift in the
    machine's load falls on both. The gateway's own share comes from its Server-Timing header."""
    messages = [{"role": "user", "content": "Hi"}]
    gateway_self_ms: list[float] = []
    async with grpc.aio.insecure_channel(inference_addr) as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        request = inference_pb2.ChatCompletionRequest(
            org=ORG,
            model=base,
            messages=[common_pb2.ChatMessage(role="user", content="Hi")],
            max_tokens=1,
            temperature=0,
        )

        async def direct():
            await stub.ChatCompletion(request)

        async def gateway():
            raw = await client.chat.completions.with_raw_response.create(
                model=base, messages=messages, max_tokens=1, temperature=0
            )
            raw.parse()
            timing = dict(entry.split(";dur=") for entry in raw.headers["server-timing"].split(", "))
            gateway_self_ms.append(float(timing["gateway"]))

        await open_loop(direct, rate, 10)  # warm-up of both paths
        await open_loop(gateway, rate, 10)
        gateway_self_ms.clear()
        direct_s, gateway_s = [], []
        blocks = 4
        for _ in range(blocks):
            direct_s += await open_loop(direct, rate, count // blocks)
            gateway_s += await open_loop(gateway, rate, count // blocks)
    ms = {
        f"{name}_{q}_ms": round(percentile(values, p) * 1000, 1)
        for name, values in (("direct", direct_s), ("gateway", gateway_s))
        for q, p in (("p50", 0.5), ("p99", 0.99))
    }
    ms["overhead_p50_ms"] = round(ms["gateway_p50_ms"] - ms["direct_p50_ms"], 1)
    ms["overhead_p99_ms"] = round(ms["gateway_p99_ms"] - ms["direct_p99_ms"], 1)
    ms["gateway_self_p50_ms"] = round(percentile(gateway_self_ms, 0.5), 2)
    ms["gateway_self_p99_ms"] = round(percentile(gateway_self_ms, 0.99), 2)
    return ms


def in_process_generate(model_dir: Path, streams: int, tokens: int) -> dict:
    """Plain transformers `generate` on one left-padded batch: the in-process baseline."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    texts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
            add_generation_prompt=True,
            tokenize=False,
        )
        for i in range(streams)
    ]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.inference_mode():
        model.generate(**batch, max_new_tokens=2, do_sample=False)  # warm-up
        started = time.perf_counter()
        out = model.generate(**batch, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
        elapsed = time.perf_counter() - started
    generated = (out.shape[1] - batch["input_ids"].shape[1]) * streams
    return {"tokens": generated, "seconds": round(elapsed, 2), "tokens_per_s": round(generated / elapsed, 1)}


def in_process_vllm_chat(model_dir: Path, streams: int, tokens: int) -> dict:
    """vLLM's offline `LLM.chat` on the same batch: the other in-process baseline. It runs in a
    fresh process (this script with --vllm-baseline), as vLLM wants; its start-up is not timed."""
    argv = [sys.executable, __file__, "--vllm-baseline", str(model_dir), "--streams", str(streams)]
    done = subprocess.run([*argv, "--tokens", str(tokens)], capture_output=True, text=True, timeout=1200)
    if done.returncode != 0:
        raise RuntimeError(f"the vLLM baseline failed:\n{done.stderr[-3000:]}")
    # vLLM logs to stdout too: the figures are the last JSON line.
    return json.loads(next(line for line in reversed(done.stdout.splitlines()) if line.startswith("{")))


def vllm_chat(model_dir: Path, streams: int, tokens: int) -> dict:
    os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
    from vllm import LLM, SamplingParams  # noqa: PLC0415 - optional, and only in this process

    llm = LLM(model=str(model_dir), max_num_seqs=streams, kv_cache_memory_bytes=CPU_KV_CACHE_BYTES)
    batch = [[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}] for i in range(streams)]
    llm.chat(batch[:2], SamplingParams(max_tokens=2), use_tqdm=False)  # warm-up
    params = SamplingParams(max_tokens=tokens, min_tokens=tokens, temperature=0)
    started = time.perf_counter()
    outputs = llm.chat(batch, params, use_tqdm=False)
    elapsed = time.perf_counter() - started
    generated = sum(len(output.outputs[0].token_ids) for output in outputs)
    return {"tokens": generated, "seconds": round(elapsed, 2), "tokens_per_s": round(generated / elapsed, 1)}


def start_stack(home: Path, models: str, engine: str) -> tuple[subprocess.Popen, dict]:
    env = {
        **os.environ,
        "TUNERY_INFERENCE_ENGINE": engine,
        "TUNERY_HOME": str(home),
        "TUNERY_API_KEYS": f"{KEY}:{ORG}",
        "TUNERY_LOG_JSON": "false",
        "TUNERY_INFERENCE_PRELOAD": models,
        "TUNERY_MODEL_CACHE": str(CommonSettings().model_cache),
    }
    env.pop("TUNERY_NATS_URL", None)
    log = open(home / "launcher.log", "wb")  # noqa: SIM115 - open while the stack runs
    proc = subprocess.Popen(
        [sys.executable, "-m", "tunery_common.cli", "up", "--random-ports", "--timeout", "600"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return proc, wait_until_healthy(home, proc, 660)


async def measure(args, state: dict, model_dir: Path, work: Path) -> dict:
    client = openai.AsyncOpenAI(
        base_url=f"{state['gateway_url']}/v1", api_key=KEY, max_retries=0, timeout=600
    )
    bus = await Bus.connect(state["nats_url"], "serve-bench")
    try:
        adapters = [make_adapter(model_dir, work / f"adapter{i}", seed=i) for i in range(8 + args.hot_loads)]
        served = [await publish(bus, args.model, f"ftjob-bench{i}", adapters[i]) for i in range(8)]
        for model_id in served:
            await first_completion(client, model_id)
        await throughput(client, [args.model], min(args.streams, 4), 4)  # warm-up
        base = await throughput(client, [args.model], args.streams, args.tokens)
        one = await throughput(client, served[:1], args.streams, args.tokens)
        mixed = await throughput(client, served, args.streams, args.tokens)
        hot = await hot_loads(client, bus, args.model, adapters[8:])
        inference = state["addrs"]["inference"]
        overhead = {
            model: await gateway_overhead(client, inference, model, args.rate, args.requests)
            for model in (args.overhead_model, args.model)
        }
        overhead["client_floor"] = floor = await client_floor(args.rate, args.requests)
        # Both paths make the same gRPC hop to inference; the gateway's adds an HTTP hop, whose
        # client side (the openai client) costs its floor whatever the server does.
        tiny = overhead[args.overhead_model]
        tiny["overhead_less_client_p50_ms"] = round(tiny["overhead_p50_ms"] - floor["openai_http_p50_ms"], 1)
    finally:
        await bus.close()
        await client.close()
    return {"base": base, "one_adapter": one, "eight_adapters": mixed, "hot_load_s": hot, "gateway": overhead}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--engine", choices=["auto", "hf", "vllm"], default="auto")
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--hot-loads", type=int, default=5)
    parser.add_argument("--rate", type=float, default=50.0, help="requests/s for the gateway overhead")
    parser.add_argument(
        "--requests", type=int, default=100, help="requests per path for the gateway overhead"
    )
    parser.add_argument(
        "--overhead-model",
        default="tiny-random-llama",
        help="a second model for the gateway overhead, fast enough that the engine never queues "
        "requests at --rate (on a slow machine the main model's own queueing hides the gateway's cost)",
    )
    parser.add_argument("--no-vllm-baseline", action="store_true", help="skip vLLM's offline LLM.chat")
    parser.add_argument("--vllm-baseline", type=Path, help=argparse.SUPPRESS)  # the baseline's own process
    args = parser.parse_args()
    if args.vllm_baseline:
        print(json.dumps(vllm_chat(args.vllm_baseline, args.streams, args.tokens)))
        return
    model_dir = ensure_base_model(args.model, CommonSettings().model_cache)
    ensure_base_model(args.overhead_model, CommonSettings().model_cache)
    work = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    proc, state = start_stack(work, f"{args.model},{args.overhead_model}", args.engine)
    try:
        served = asyncio.run(measure(args, state, model_dir, work))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
    # The stack is down: the in-process baseline has the machine to itself, as the stack had.
    baselines = {"in_process_generate": in_process_generate(model_dir, args.streams, args.tokens)}
    if not args.no_vllm_baseline and importlib.util.find_spec("vllm") is not None:
        baselines["in_process_vllm_chat"] = in_process_vllm_chat(model_dir, args.streams, args.tokens)
    baseline = max(figures["tokens_per_s"] for figures in baselines.values())
    shutil.rmtree(work, ignore_errors=True)
    base_tps = served["base"]["tokens_per_s"]
    best = max(served["base"]["tokens_per_s"], served["one_adapter"]["tokens_per_s"])
    hot = served.pop("hot_load_s")
    figures = {
        "model": args.model,
        "engine": args.engine,
        "streams": args.streams,
        "tokens": args.tokens,
        **served,
        **baselines,
        "one_adapter_vs_base": round(served["one_adapter"]["tokens_per_s"] / base_tps, 2),
        "eight_adapters_vs_base": round(served["eight_adapters"]["tokens_per_s"] / base_tps, 2),
        "best_gateway_vs_in_process": round(best / baseline, 2),
        "hot_load_p50_s": round(statistics.median(hot), 3),
        "hot_load_p95_s": round(percentile(hot, 0.95), 3),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
