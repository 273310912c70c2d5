"""Prometheus metrics of the inference service: chat completions (plain and streamed, a base model
and a fine-tuned one) through the real gateway and the openai client, then a scrape of /metrics
over HTTP shows what they did, per model."""

import httpx
import openai
import pytest
from adapter_helpers import BASE, make_lora, publish
from inference_stack import inference_stack
from prometheus_client.parser import text_string_to_metric_families
from tunery_common.basemodels import ensure_base_model
from tunery_inference.metrics import serve_metrics

MESSAGES = [{"role": "user", "content": "Say something."}]


@pytest.fixture(scope="module")
def adapter(model_cache, tmp_path_factory):
    return make_lora(ensure_base_model(BASE, model_cache), tmp_path_factory.mktemp("adapter"), seed=5)


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics: (name, sorted labels) → value."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").raise_for_status().text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_completions_move_the_metrics_of_their_model(
    nats_url, model_cache, tmp_path, monkeypatch, adapter
):
    monkeypatch.setenv("TUNERY_API_KEYS", "k1:acme")
    async with inference_stack(nats_url, model_cache, tmp_path) as stack:
        server = serve_metrics(stack.metrics, 0, host="127.0.0.1")
        try:
            api = openai.AsyncOpenAI(base_url=f"{stack.url}/v1", api_key="k1", max_retries=0, timeout=300)
            before = scrape(server.server_port)
            assert ("tunery_inference_requests_total", (("model", BASE),)) not in before

            plain = await api.chat.completions.create(model=BASE, messages=MESSAGES, max_tokens=6)
            stream = await api.chat.completions.create(
                model=BASE,
                messages=MESSAGES,
                max_tokens=6,
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = [chunk async for chunk in stream]
            streamed_usage = chunks[-1].usage
            deltas = sum(1 for chunk in chunks if chunk.choices and chunk.choices[0].delta.content)

            model, _ = await publish(stack.bus, "acme", "ftjob-metrics1", adapter)
            await stack.applied()
            tuned = [  # the adapter is loaded once, then resident
                await api.chat.completions.create(model=model.id, messages=MESSAGES, max_tokens=3)
                for _ in range(2)
            ]

            after = scrape(server.server_port)
        finally:
            server.shutdown()
            server.server_close()

    def value(name: str, **labels) -> float:
        return after[(name, tuple(sorted(labels.items())))]

    assert value("tunery_inference_requests_total", model=BASE) == 2
    output_tokens = plain.usage.completion_tokens + streamed_usage.completion_tokens
    assert value("tunery_inference_output_tokens_total", model=BASE) == output_tokens
    prompt_tokens = plain.usage.prompt_tokens + streamed_usage.prompt_tokens
    assert value("tunery_inference_prompt_tokens_total", model=BASE) == prompt_tokens
    # One first token per request; every later delta is one inter-token gap.
    assert value("tunery_inference_time_to_first_token_seconds_count", model=BASE) == 2
    assert value("tunery_inference_time_to_first_token_seconds_sum", model=BASE) > 0
    assert value("tunery_inference_inter_token_latency_seconds_count", model=BASE) >= deltas - 1 > 0
    assert value("tunery_inference_queue_depth", model=BASE) == 0  # nothing waits once answered

    assert value("tunery_inference_requests_total", model=model.id) == 2
    assert value("tunery_inference_output_tokens_total", model=model.id) == sum(
        r.usage.completion_tokens for r in tuned
    )
    assert value("tunery_inference_adapter_load_seconds_count", model=model.id) == 1
    # The second request of the base model and of the adapter reuse their first one's prompt KV
    # (all of it but the last token, which gives the first generated token's logits).
    assert value("tunery_inference_prefix_cache_hits_total", base_model=BASE) == 2
    assert value("tunery_inference_prefix_cache_tokens_reused_total", base_model=BASE) == 2 * (
        plain.usage.prompt_tokens - 1
    )
    assert value("tunery_inference_resident_adapters", base_model=BASE) == 1
