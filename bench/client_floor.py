"""What the clients alone cost: the `openai` client against an HTTP server that answers at once,
and a gRPC stub against a gRPC server that does. Both servers run in another process, as the
gateway and the inference service do, and do nothing but answer a canned reply.

serve_bench.py subtracts these floors from the gateway overhead it measures end to end: the part
of the difference that is the client libraries, not the gateway. On its own:

    .venv/bin/python bench/client_floor.py [--rate 50] [--requests 300]

The last line of output is one JSON object.
"""

import argparse
import asyncio
import json
import subprocess
import sys

import grpc
import openai
from open_loop import open_loop, percentile
from tunery.common.v1 import common_pb2
from tunery.inference.v1 import inference_pb2, inference_pb2_grpc
from tunery_common.grpc_server import start_grpc_server

MODEL = "canned"
_REPLY = {
    "id": "chatcmpl-canned",
    "object": "chat.completion",
    "created": 0,
    "model": MODEL,
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": "length"}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10},
}
_BODY = json.dumps(_REPLY).encode()
_HTTP_REPLY = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(_BODY) + _BODY
)


async def _answer_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Keep-alive HTTP/1.1: reads each request (head and body) and writes the canned reply."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            await reader.readexactly(length)
            writer.write(_HTTP_REPLY)
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


class _CannedInference(inference_pb2_grpc.InferenceServicer):
    async def ChatCompletion(self, request, context):  # noqa: N802 - the gRPC method's name
        reply = inference_pb2.CompletionResponse(id="chatcmpl-canned", model=MODEL)
        reply.choices.add(text="x", finish_reason="length")
        reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens = 9, 1, 10
        return reply


async def _serve() -> None:
    http = await asyncio.start_server(_answer_http, "127.0.0.1", 0)
    grpc_server = await start_grpc_server(
        0,
        [(inference_pb2_grpc.add_InferenceServicer_to_server, _CannedInference(), "Inference")],
        "127.0.0.1",
    )
    print(json.dumps({"http": http.sockets[0].getsockname()[1], "grpc": grpc_server.port}), flush=True)
    await asyncio.Event().wait()  # until killed


async def client_floor(rate: float, count: int) -> dict:
    """p50/p99 (ms) of a 1-token chat request with each client against the canned servers."""
    server = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True)
    try:
        ports = json.loads(await asyncio.to_thread(server.stdout.readline))
        client = openai.AsyncOpenAI(
            base_url=f"http://127.0.0.1:{ports['http']}/v1", api_key="-", max_retries=0
        )
        request = inference_pb2.ChatCompletionRequest(
            model=MODEL, messages=[common_pb2.ChatMessage(role="user", content="Hi")], max_tokens=1
        )
        async with grpc.aio.insecure_channel(f"127.0.0.1:{ports['grpc']}") as channel:
            stub = inference_pb2_grpc.InferenceStub(channel)

            async def via_grpc() -> None:
                await stub.ChatCompletion(request)

            async def via_openai() -> None:
                await client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=1
                )

            figures = {}
            for name, call in (("grpc", via_grpc), ("openai_http", via_openai)):
                await open_loop(call, rate, 20)  # warm-up: connections, first-call costs
                seconds = await open_loop(call, rate, count)
                for label, q in (("p50", 0.5), ("p99", 0.99)):
                    figures[f"{name}_{label}_ms"] = round(percentile(seconds, q) * 1000, 2)
        await client.close()
    finally:
        server.kill()
        server.wait()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the servers' process
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve())
        return
    print(json.dumps(asyncio.run(client_floor(args.rate, args.requests))))


if __name__ == "__main__":
    main()
