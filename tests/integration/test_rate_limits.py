"""Rate limits through the real gateway, the real inference service and the official openai client
(no retries): the request over the limit is a 429 with Retry-After, other keys and models are
unaffected, exempt keys are not limited, and token reservations are settled with actual usage."""

import openai
import pytest
from adapter_helpers import BASE, make_lora, publish
from inference_stack import inference_stack
from tunery.inference.v1 import inference_pb2
from tunery_common.basemodels import ensure_base_model
from tunery_gateway.ratelimit_routes import reservation

MESSAGES = [{"role": "user", "content": "Classify this ticket: my invoice is wrong."}]
KEYS = "k1:acme,k1b:acme,k2:other,judge-key:acme"
LIMITS = {
    "models": {BASE: {"rpm": 2}},
    "fine_tuned_models": {"rpm": 5},
    "orgs": {"other": {"models": {BASE: {"rpm": None, "tpm": 300}}}},
    "exempt_keys": ["judge-key"],
}


@pytest.fixture(scope="module")
def adapter(model_cache, tmp_path_factory):
    return make_lora(ensure_base_model(BASE, model_cache), tmp_path_factory.mktemp("adapter"), seed=3)


@pytest.fixture
async def stack(nats_url, model_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNERY_API_KEYS", KEYS)
    monkeypatch.setenv("TUNERY_INTERNAL_API_KEY", "platform-key")
    async with inference_stack(nats_url, model_cache, tmp_path, rate_limits=LIMITS) as running:
        yield running


def client(url: str, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=300)


async def chat_raw(api: openai.AsyncOpenAI, **kwargs):
    """The raw response (headers) of a chat completion, its body parsed."""
    raw = await api.chat.completions.with_raw_response.create(
        **{"model": BASE, "messages": MESSAGES, "max_tokens": 2, **kwargs}
    )
    return raw.headers, raw.parse()


async def test_the_request_over_the_limit_is_refused_for_that_key_and_model_only(stack, adapter):
    k1 = client(stack.url, "k1")
    headers, reply = await chat_raw(k1)
    assert reply.choices[0].message.content is not None
    assert headers["x-ratelimit-limit-requests"] == "2"
    assert headers["x-ratelimit-remaining-requests"] == "1"
    assert headers["x-ratelimit-reset-requests"].endswith("s")

    # A streamed answer carries the headers too, and counts the same.
    headers, stream = await chat_raw(k1, stream=True)
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert [chunk async for chunk in stream]

    with pytest.raises(openai.RateLimitError) as info:
        await k1.chat.completions.create(model=BASE, messages=MESSAGES, max_tokens=2)
    error = info.value
    assert error.status_code == 429
    assert error.body["type"] == "requests" and error.body["code"] == "rate_limit_exceeded"
    assert (
        f"Rate limit reached for {BASE} on requests per min (RPM): Limit 2, Used 2" in error.body["message"]
    )
    assert 1 <= int(error.response.headers["retry-after"]) <= 60
    assert error.response.headers["x-ratelimit-remaining-requests"] == "0"

    # The window is per (key, model), whichever endpoint: text completions share it.
    with pytest.raises(openai.RateLimitError):
        await k1.completions.create(model=BASE, prompt="Hello", max_tokens=2)

    # Another key of the same org is unaffected.
    headers, _ = await chat_raw(client(stack.url, "k1b"))
    assert headers["x-ratelimit-remaining-requests"] == "1"

    # So is another model for the same key: a fine-tuned model has its own window and limit.
    model, _ = await publish(stack.bus, "acme", "ftjob-rate1", adapter)
    await stack.applied()
    headers, reply = await chat_raw(k1, model=model.id)
    assert reply.model == model.id
    assert (headers["x-ratelimit-limit-requests"], headers["x-ratelimit-remaining-requests"]) == ("5", "4")


async def test_an_exempt_key_is_not_limited(stack):
    judge = client(stack.url, "judge-key")
    for _ in range(4):  # twice the limit
        headers, reply = await chat_raw(judge)
        assert reply.choices
        assert not any(name.startswith("x-ratelimit-") for name in headers)


async def test_the_platforms_internal_key_is_authenticated_and_never_limited(stack):
    internal = client(stack.url, "platform-key")  # eval-judge's judge calls the gateway with it
    for _ in range(4):  # twice the limit
        headers, reply = await chat_raw(internal)
        assert reply.choices
        assert not any(name.startswith("x-ratelimit-") for name in headers)
    with pytest.raises(openai.AuthenticationError):
        await client(stack.url, "platform-key-typo").models.list()


async def test_tokens_are_reserved_then_settled_with_actual_usage(stack):
    k2 = client(stack.url, "k2")
    # More than the limit itself: never admitted, and retrying would not help.
    with pytest.raises(openai.RateLimitError) as info:
        await k2.chat.completions.create(model=BASE, messages=MESSAGES, max_tokens=1000)
    assert info.value.body["type"] == "tokens"
    assert "Request too large" in info.value.body["message"]
    assert info.value.response.headers["x-should-retry"] == "false"
    assert "retry-after" not in info.value.response.headers

    def reserved(max_tokens: int) -> int:
        request = inference_pb2.ChatCompletionRequest(model=BASE, max_tokens=max_tokens)
        for message in MESSAGES:
            request.messages.add(**message)
        return reservation(request, default_max_tokens=512)

    headers, first = await chat_raw(k2, max_tokens=100)
    assert headers["x-ratelimit-remaining-tokens"] == str(300 - reserved(100))
    # The next admission sees the first request's actual usage instead of its reservation.
    headers, _ = await chat_raw(k2, max_tokens=100)
    assert headers["x-ratelimit-remaining-tokens"] == str(300 - first.usage.total_tokens - reserved(100))
    assert "x-ratelimit-limit-requests" not in headers  # rpm is unlimited for this org and model
