"""The OpenAI inference API surface: /v1/chat/completions parameters, /v1/completions and
DELETE /v1/models/{id}, driven by the official openai client against the real gateway, the real
inference gRPC service (HF engine on the tiny random Llama) and a real NATS."""

import asyncio
import json
import time
from typing import Literal

import jsonschema
import openai
import pytest
from adapter_helpers import BASE, make_lora, publish
from gateway_harness import serve_gateway
from peft import LoraConfig, get_peft_model
from pydantic import BaseModel, Field
from transformers import AutoModelForCausalLM
from tunery.inference.v1 import inference_pb2_grpc
from tunery_common.basemodels import ensure_base_model
from tunery_common.bus import Bus
from tunery_common.grpc_server import start_grpc_server
from tunery_gateway.settings import GatewaySettings
from tunery_inference.engine_pool import EnginePool
from tunery_inference.registry import ModelRegistry
from tunery_inference.service import InferenceService

MESSAGES = [{"role": "user", "content": "Classify this ticket: my invoice is wrong."}]
TICKET = {
    "type": "object",
    "properties": {
        "category": {"type": "string", "enum": ["billing", "technical", "account"]},
        "urgent": {"type": "boolean"},
        "priority": {"type": "integer", "minimum": 1, "maximum": 5},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 6}, "maxItems": 2},
    },
    "required": ["category", "urgent", "priority", "tags"],
    "additionalProperties": False,
}


class Ticket(BaseModel):
    """The same answer as a pydantic model, for the SDK's `parse` (which sends a strict schema)."""

    category: Literal["billing", "technical", "account"]
    urgent: bool
    priority: int = Field(ge=1, le=5)


@pytest.fixture
async def stack(nats_url, model_cache, tmp_path, monkeypatch):
    """Bus, registry, the inference gRPC server and the gateway in front of it; yields the bus,
    the registry and an openai client per org."""
    bus = await Bus.connect(nats_url, "test")
    registry = ModelRegistry(bus, tmp_path / "adapters")
    watch = asyncio.create_task(registry.watch())
    await registry.ready.wait()
    service = InferenceService(EnginePool(model_cache), registry)
    server = await start_grpc_server(
        0, [(inference_pb2_grpc.add_InferenceServicer_to_server, service, "Inference")]
    )
    monkeypatch.setenv("TUNERY_API_KEYS", "k1:acme,k2:other")
    settings = GatewaySettings(
        nats_url=nats_url, home=tmp_path / "home", inference_addr=f"127.0.0.1:{server.port}"
    )
    with serve_gateway(settings) as url:
        clients = {
            org: openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=300)
            for org, key in (("acme", "k1"), ("other", "k2"))
        }
        yield bus, registry, clients
    await server.stop(0)
    watch.cancel()
    await bus.close()


def chat(client: openai.AsyncOpenAI, **kwargs):
    return client.chat.completions.create(**{"model": BASE, "messages": MESSAGES, **kwargs})


async def bad_request(call) -> dict:
    with pytest.raises(openai.BadRequestError) as info:
        await call
    assert info.value.status_code == 400
    return info.value.body


# -- /v1/chat/completions -----------------------------------------------------------------------


async def test_chat_sampling_parameters(stack):
    _, _, clients = stack
    client = clients["acme"]
    greedy = await chat(client, max_tokens=8, temperature=0)
    assert (greedy.choices[0].finish_reason, greedy.usage.completion_tokens) == ("length", 8)
    assert greedy.usage.total_tokens == greedy.usage.prompt_tokens + 8
    assert (await chat(client, max_completion_tokens=5, temperature=0)).usage.completion_tokens == 5

    # A nucleus this small holds only the most likely token: sampling becomes greedy.
    narrow = await chat(client, max_tokens=8, temperature=1.0, top_p=1e-6, seed=1)
    assert narrow.choices[0].message.content == greedy.choices[0].message.content

    seeded = [
        (await chat(client, max_tokens=8, temperature=1.0, seed=s)).choices[0].message.content
        for s in (42, 42, 43)
    ]
    assert seeded[0] == seeded[1] != seeded[2]

    text = greedy.choices[0].message.content
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    stopped = await chat(client, max_tokens=8, temperature=0, stop=["never here", stop])
    assert stopped.choices[0].message.content == text[: text.index(stop)]
    assert stopped.choices[0].finish_reason == "stop"

    # The random model repeats itself greedily; a presence penalty moves it off repeated tokens.
    penalised = await chat(client, max_tokens=8, temperature=0, presence_penalty=2.0)
    assert penalised.choices[0].message.content != text

    token = 15339  # " autumn": a +100 bias makes it the only token ever sampled
    biased = await chat(client, max_tokens=3, temperature=1.0, seed=0, logit_bias={str(token): 100})
    assert biased.choices[0].message.content == " autumn autumn autumn"


async def test_n_choices_with_usage_summed(stack):
    _, _, clients = stack
    reply = await chat(clients["acme"], max_tokens=6, temperature=1.0, seed=7, n=3)
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert len({c.message.content for c in reply.choices}) == 3
    single = await chat(clients["acme"], max_tokens=6, temperature=1.0, seed=7)
    assert reply.choices[0].message.content == single.choices[0].message.content
    assert reply.usage.prompt_tokens == single.usage.prompt_tokens  # the prompt counts once
    assert reply.usage.completion_tokens == 3 * 6


async def test_chat_logprobs(stack):
    _, _, clients = stack
    reply = await chat(clients["acme"], max_tokens=6, temperature=0, logprobs=True, top_logprobs=2)
    choice = reply.choices[0]
    content = choice.logprobs.content
    assert len(content) == 6 and "".join(t.token for t in content) == choice.message.content
    for entry in content:
        assert entry.logprob <= 0 and bytes(entry.bytes).decode() == entry.token
        assert len(entry.top_logprobs) == 2
        assert entry.top_logprobs[0].token == entry.token  # greedy: the most likely one
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob)
        assert entry.top_logprobs[1].logprob <= entry.logprob
    plain = await chat(clients["acme"], max_tokens=2, temperature=0)
    assert plain.choices[0].logprobs is None


async def test_json_schema_output_always_validates(stack):
    _, _, clients = stack
    client = clients["acme"]
    fmt = {"type": "json_schema", "json_schema": {"name": "ticket", "strict": True, "schema": TICKET}}
    for seed in range(3):
        reply = await chat(client, response_format=fmt, temperature=1.0, seed=seed, max_tokens=300)
        jsonschema.validate(json.loads(reply.choices[0].message.content), TICKET)
        assert reply.choices[0].finish_reason == "stop"

    stream = await chat(client, response_format=fmt, temperature=1.0, seed=5, max_tokens=300, stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    jsonschema.validate(json.loads(text), TICKET)

    # The SDK's structured outputs: a pydantic model in, a parsed instance out.
    parsed = await client.chat.completions.parse(
        model=BASE, messages=MESSAGES, response_format=Ticket, temperature=1.0, seed=9, max_tokens=300
    )
    assert isinstance(parsed.choices[0].message.parsed, Ticket)


async def test_json_object_and_schemas_that_cannot_be_enforced(stack):
    _, _, clients = stack
    client = clients["acme"]
    # A random model never closes a free string by itself: a bias on the closing tokens does.
    closing = {"18": 15.0, "109": 15.0}  # '"' and '}' in this tokenizer
    reply = await chat(
        client, response_format={"type": "json_object"}, logit_bias=closing, seed=1, max_tokens=200
    )
    assert isinstance(json.loads(reply.choices[0].message.content), dict)

    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "pattern": "["}}}
    body = await bad_request(chat(client, response_format=bad))
    assert body["param"] == "response_format.json_schema.schema" and "regex" in body["message"]
    body = await bad_request(chat(client, response_format={"type": "json_schema"}))
    assert body["param"] == "response_format"
    body = await bad_request(
        chat(client, response_format={"type": "json_schema", "json_schema": {"name": "a b"}})
    )
    assert body["param"] == "response_format.json_schema.name"


async def test_streams_with_usage_logprobs_and_choices(stack):
    _, _, clients = stack
    client = clients["acme"]
    whole = await chat(client, max_tokens=8, temperature=1.0, seed=3, n=2, logprobs=True)
    stream = await chat(
        client,
        max_tokens=8,
        temperature=1.0,
        seed=3,
        n=2,
        logprobs=True,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    *body, last = chunks
    # The last chunk carries the usage and no choice; no other chunk has usage.
    assert last.choices == [] and last.usage == whole.usage
    assert all(c.usage is None and len(c.choices) == 1 for c in body)
    for choice in whole.choices:
        mine = [c.choices[0] for c in body if c.choices[0].index == choice.index]
        assert mine[0].delta.role == "assistant"
        assert "".join(c.delta.content or "" for c in mine) == choice.message.content
        streamed = [t for c in mine if c.logprobs for t in c.logprobs.content]
        assert [t.token for t in streamed] == [t.token for t in choice.logprobs.content]
        # The second request reuses the first one's prompt KV (prefix cache): the same
        # arithmetic in another order, equal up to float rounding.
        assert [t.logprob for t in streamed] == pytest.approx(
            [t.logprob for t in choice.logprobs.content], rel=1e-5, abs=1e-5
        )
        assert [c.finish_reason for c in mine if c.finish_reason] == [choice.finish_reason]

    plain = await chat(client, max_tokens=4, temperature=0, stream=True)
    assert [chunk.usage async for chunk in plain][-1] is None  # without include_usage: none at all


def server_timing(headers) -> dict[str, float]:
    """`Server-Timing: gateway;dur=0.812, upstream;dur=9.431` as {name: ms}."""
    return {
        name.strip(): float(dur.removeprefix("dur="))
        for name, dur in (entry.split(";") for entry in headers["server-timing"].split(","))
    }


async def test_server_timing_splits_the_gateway_from_the_inference_call(stack):
    _, _, clients = stack
    client = clients["acme"]
    started = time.perf_counter()
    raw = await client.chat.completions.with_raw_response.create(
        model=BASE, messages=MESSAGES, max_tokens=2, temperature=0
    )
    elapsed_ms = (time.perf_counter() - started) * 1000
    timing = server_timing(raw.headers)
    assert raw.parse().usage.completion_tokens == 2
    assert set(timing) == {"gateway", "upstream"}
    assert timing["gateway"] > 0 and timing["upstream"] > 0
    assert timing["gateway"] + timing["upstream"] < elapsed_ms  # both inside the client's wait

    streamed = await client.chat.completions.with_raw_response.create(
        model=BASE, messages=MESSAGES, max_tokens=2, stream=True
    )
    assert set(server_timing(streamed.headers)) == {"gateway", "upstream"}  # upstream: to the 1st token
    assert len([chunk async for chunk in streamed.parse()]) > 0

    # Refused before any call to the service: all of it is the gateway's.
    with pytest.raises(openai.BadRequestError) as info:
        await chat(client, max_tokens=0)
    assert set(server_timing(info.value.response.headers)) == {"gateway"}


async def test_unsupported_and_bad_parameters_name_the_parameter(stack):
    _, _, clients = stack
    client = clients["acme"]
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    cases = [
        # SmolLM2's chat template has no place for tools: they would silently not reach the model.
        ({"tools": [tool]}, "tools"),
        ({"tools": [tool], "tool_choice": "required"}, "tool_choice"),
        ({"tools": [{"type": "retrieval"}]}, "tools[0].type"),
        ({"reasoning_effort": "low"}, "reasoning_effort"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"extra_body": {"guided_json": {}}}, "guided_json"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"n": 0}, "n"),
        ({"n": 129}, "n"),
        ({"logit_bias": {"hello": 1}}, "logit_bias"),
        ({"logit_bias": {"5": 101}}, "logit_bias"),
        ({"logit_bias": {"49152": 1}}, "logit_bias"),  # past the vocabulary: the engine says so
        ({"presence_penalty": 3}, "presence_penalty"),
        ({"messages": [{"role": "tool", "content": "18C"}]}, "messages[0]"),
        ({"messages": [{"role": "user", "content": "hello " * 3000}]}, "messages"),
    ]
    for kwargs, param in cases:
        body = await bad_request(chat(client, max_tokens=2, **kwargs))
        assert body["param"] == param, (kwargs, body)
    # tool_choice "none": the model is not to call tools, so it is not told about them.
    reply = await chat(client, max_tokens=2, tools=[tool], tool_choice="none")
    assert reply.choices[0].message.content is not None


# -- /v1/completions ----------------------------------------------------------------------------


async def test_text_completions(stack):
    _, _, clients = stack
    client = clients["acme"]
    reply = await client.completions.create(
        model=BASE, prompt="Once upon a time", max_tokens=6, temperature=0
    )
    assert reply.object == "text_completion" and reply.id.startswith("cmpl")
    assert (reply.choices[0].finish_reason, reply.usage.completion_tokens) == ("length", 6)
    default = await client.completions.create(model=BASE, prompt="Once upon a time", temperature=0)
    assert default.usage.completion_tokens == 16  # OpenAI's default max_tokens here
    assert default.choices[0].text.startswith(reply.choices[0].text)

    # Prompts × n choices, indexed prompt by prompt; each prompt counted once.
    many = await client.completions.create(
        model=BASE, prompt=["Once upon a time", "The weather"], n=2, max_tokens=4, temperature=1.0, seed=5
    )
    assert [c.index for c in many.choices] == [0, 1, 2, 3]
    one = await client.completions.create(
        model=BASE, prompt="The weather", max_tokens=4, temperature=1.0, seed=5
    )
    assert many.choices[2].text == one.choices[0].text
    assert many.usage.prompt_tokens == reply.usage.prompt_tokens + one.usage.prompt_tokens
    assert many.usage.completion_tokens == 16

    echoed = await client.completions.create(
        model=BASE, prompt="Once upon a time", max_tokens=6, temperature=0, echo=True
    )
    assert echoed.choices[0].text == "Once upon a time" + reply.choices[0].text

    stop = reply.choices[0].text[2:4]
    stopped = await client.completions.create(
        model=BASE, prompt="Once upon a time", max_tokens=6, temperature=0, stop=stop
    )
    assert stopped.choices[0].text == reply.choices[0].text[: reply.choices[0].text.index(stop)]


async def test_text_completion_logprobs_in_the_legacy_shape(stack):
    _, _, clients = stack
    reply = await clients["acme"].completions.create(
        model=BASE, prompt="Once upon a time", max_tokens=5, temperature=0, logprobs=2
    )
    choice = reply.choices[0]
    logprobs = choice.logprobs
    assert "".join(logprobs.tokens) == choice.text and len(logprobs.tokens) == 5
    assert logprobs.text_offset == [len("".join(logprobs.tokens[:i])) for i in range(5)]
    for token, logprob, top in zip(
        logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs, strict=True
    ):
        assert len(top) == 2 and top[token] == pytest.approx(logprob) == max(top.values())


async def test_streamed_text_completions(stack):
    _, _, clients = stack
    client = clients["acme"]
    whole = await client.completions.create(
        model=BASE, prompt=["Once upon a time", "The weather"], max_tokens=6, temperature=0, echo=True
    )
    stream = await client.completions.create(
        model=BASE,
        prompt=["Once upon a time", "The weather"],
        max_tokens=6,
        temperature=0,
        echo=True,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    for choice in whole.choices:
        mine = [c.choices[0] for c in chunks[:-1] if c.choices[0].index == choice.index]
        assert "".join(c.text for c in mine) == choice.text
        assert [c.finish_reason for c in mine if c.finish_reason] == ["length"]


async def test_text_completion_refusals_name_the_parameter(stack):
    _, _, clients = stack
    client = clients["acme"]
    cases = [
        ({"prompt": "x", "echo": True, "logprobs": 1}, "echo"),
        ({"prompt": "x", "suffix": "y"}, "suffix"),
        ({"prompt": "x", "best_of": 2}, "best_of"),
        ({"prompt": "x", "logprobs": 6}, "logprobs"),
        ({"prompt": []}, "prompt"),
        ({"prompt": [1, 2, 3]}, "prompt[0]"),  # token ids: only text prompts
        ({"prompt": ""}, "prompt"),
        ({"prompt": "hello " * 3000}, "prompt"),
    ]
    for kwargs, param in cases:
        body = await bad_request(client.completions.create(model=BASE, max_tokens=2, **kwargs))
        assert body["param"] == param, (kwargs, body)
    with pytest.raises(openai.NotFoundError):
        await client.completions.create(model="no-such-model", prompt="x")


async def test_text_completion_with_a_json_schema(stack):
    _, _, clients = stack
    fmt = {"type": "json_schema", "json_schema": {"name": "ticket", "schema": TICKET}}
    reply = await clients["acme"].completions.create(
        model=BASE, prompt="Ticket as JSON:", max_tokens=300, seed=2, extra_body={"response_format": fmt}
    )
    jsonschema.validate(json.loads(reply.choices[0].text), TICKET)


# -- DELETE /v1/models/{id} ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def adapter(model_cache, tmp_path_factory):
    return make_lora(ensure_base_model(BASE, model_cache), tmp_path_factory.mktemp("adapter"), seed=1)


async def applied(bus: Bus, registry: ModelRegistry) -> None:
    """Waits until the inference registry has seen the latest models-bucket change."""
    await registry.wait_applied((await bus.models.kv.status()).stream_info.state.last_seq)


async def test_deleting_a_fine_tuned_model_and_a_checkpoint(stack, adapter):
    bus, registry, clients = stack
    acme, other = clients["acme"], clients["other"]
    final, _ = await publish(bus, "acme", "ftjob-del1", adapter)
    checkpoint, _ = await publish(bus, "acme", "ftjob-del1", adapter, step=2)
    await applied(bus, registry)
    assert (await chat(acme, model=final.id, max_tokens=2)).model == final.id

    # Another org's model answers like an unknown one, and stays.
    with pytest.raises(openai.NotFoundError) as info:
        await other.models.delete(final.id)
    assert info.value.body["param"] == "model" and info.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        await acme.models.delete("ft:tiny-random-llama:acme:sfx:ftjob-unknown")
    body = await bad_request(acme.models.delete(BASE))
    assert body["param"] == "model" and "base model" in body["message"]

    deleted = await acme.models.delete(final.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (final.id, "model", True)
    record = await bus.models.get("acme", final.key_id)
    assert record.status == "deleted"  # kept as a tombstone: the id is never served again
    with pytest.raises(FileNotFoundError):
        await bus.get_object(final.adapter_object)
    events = await bus.read_events("model", final.key_id)
    assert [e.what for e in events] == ["deleted"]

    await applied(bus, registry)
    with pytest.raises(openai.NotFoundError):
        await acme.models.retrieve(final.id)
    with pytest.raises(openai.NotFoundError):
        await chat(acme, model=final.id, max_tokens=2)
    assert final.id not in [m.id async for m in acme.models.list()]
    with pytest.raises(openai.NotFoundError):
        await acme.models.delete(final.id)  # already gone

    # A checkpoint is a model of its own: still served until deleted the same way.
    assert (await chat(acme, model=checkpoint.id, max_tokens=2)).model == checkpoint.id
    assert (await acme.models.delete(checkpoint.id)).deleted
    await applied(bus, registry)
    with pytest.raises(openai.NotFoundError):
        await chat(acme, model=checkpoint.id, max_tokens=2)


async def test_a_model_whose_adapter_cannot_be_served_is_a_clear_409(stack, model_cache, tmp_path):
    bus, registry, clients = stack
    model = AutoModelForCausalLM.from_pretrained(ensure_base_model(BASE, model_cache))
    config = LoraConfig(r=4, target_modules=["q_proj"], use_dora=True, init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(tmp_path / "dora")
    record, _ = await publish(bus, "acme", "ftjob-dora", tmp_path / "dora")
    await applied(bus, registry)
    for _ in range(2):  # nothing is kept from the failed load: the second request fails the same way
        with pytest.raises(openai.ConflictError) as info:
            await chat(clients["acme"], model=record.id, max_tokens=2)
        body = info.value.body
        assert (body["param"], body["code"]) == ("model", "model_not_servable")
        assert record.id in body["message"] and "use_dora" in body["message"]
    assert (await chat(clients["acme"], max_tokens=2)).choices[0].message.content is not None
