"""The gateway's own time per chat completion, in process and without contention for the CPU.

Runs the real gateway app (its lifespan, a real NATS, the real gRPC client) against a canned
inference service that answers at once (bench/client_floor.py), and reads each answer's
Server-Timing `gateway` figure: the time the gateway spent on the request apart from the wait on
the service. The baseline, in the same run, is `/healthz` through the same middleware stack: what
FastAPI costs for a route that does nothing. serve_bench.py measures the same figure under load,
with the whole stack sharing the machine.

    .venv/bin/python bench/gateway_self_bench.py [--requests 3000]

The last line of output is one JSON object.
"""

import argparse
import asyncio
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
from open_loop import percentile
from tunery_common.natsserver import free_port, start_nats
from tunery_gateway.main import create_app
from tunery_gateway.settings import GatewaySettings

KEY = "key-bench"
CHAT = {"model": "canned", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}


def gateway_ms(response: httpx.Response) -> float:
    timing = dict(entry.split(";dur=") for entry in response.headers["server-timing"].split(", "))
    return float(timing["gateway"])


async def self_times(client: httpx.AsyncClient, method: str, path: str, count: int, **kwargs) -> dict:
    warm_up = count // 5
    values = []
    for i in range(warm_up + count):
        response = await client.request(method, path, **kwargs)
        response.raise_for_status()
        if i >= warm_up:
            values.append(gateway_ms(response))
    return {"p50_ms": round(statistics.median(values), 3), "p90_ms": round(percentile(values, 0.9), 3)}


async def measure(nats_url: str, inference_addr: str, home: Path, count: int) -> dict:
    os.environ["TUNERY_API_KEYS"] = f"{KEY}:org-bench"
    settings = GatewaySettings(nats_url=nats_url, home=home, inference_addr=inference_addr)
    app = create_app(settings)
    transport = httpx.ASGITransport(app)
    headers = {"authorization": f"Bearer {KEY}"}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://gateway", headers=headers) as client,
    ):
        healthz = await self_times(client, "GET", "/healthz", count)
        chat = await self_times(client, "POST", "/v1/chat/completions", count, json=CHAT)
    return {"healthz": healthz, "chat_completion": chat}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    port = free_port()
    nats = start_nats(port, work / "nats")
    floor_script = Path(__file__).with_name("client_floor.py")
    canned = subprocess.Popen([sys.executable, floor_script, "--serve"], stdout=subprocess.PIPE, text=True)
    try:
        inference_addr = f"127.0.0.1:{json.loads(canned.stdout.readline())['grpc']}"
        nats_url = f"nats://127.0.0.1:{port}"
        figures = asyncio.run(measure(nats_url, inference_addr, work / "home", args.requests))
    finally:
        canned.kill()
        nats.kill()
        shutil.rmtree(work, ignore_errors=True)
    figures["chat_vs_healthz_p50_ratio"] = round(
        figures["chat_completion"]["p50_ms"] / figures["healthz"]["p50_ms"], 2
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
