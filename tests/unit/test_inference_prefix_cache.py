"""Prompt prefix caching in the transformers engine: a prompt that starts like one seen before
prefills only the rest, and decodes what it decodes with the cache off."""

from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from test_inference_batching import PROMPTS, make_adapter
from transformers import DynamicCache, LlamaConfig
from tunery_common.basemodels import ensure_base_model
from tunery_inference.engine_pool import EnginePool
from tunery_inference.engines.hf import Completion, GenerationParams, HFEngine
from tunery_inference.engines.prefix_cache import PrefixCache
from tunery_inference.settings import InferenceSettings

GREEDY_LOGPROBS = GenerationParams(max_tokens=20, temperature=0, logprobs=True, top_logprobs=2)
SYSTEM = "You answer support tickets for a bicycle shop, politely and briefly. " * 4


@pytest.fixture(scope="module")
def tiny_dir(model_cache) -> Path:
    return ensure_base_model("tiny-random-llama", model_cache)


@pytest.fixture(scope="module")
def plain(tiny_dir):
    """The same model with prefix caching off: what every cached prompt must produce."""
    engine = HFEngine(tiny_dir, device="cpu", prefix_cache_mb=0)
    assert engine.prefix_cache is None
    yield engine
    engine.close()


@pytest.fixture
def cached(tiny_dir):
    engine = HFEngine(tiny_dir, device="cpu")
    yield engine
    engine.close()


def prompt_ids(engine: HFEngine, prompt) -> list[int]:
    """The prompt's token ids as the engine feeds them (chat template, or the tokenizer's BOS)."""
    if isinstance(prompt, str):
        return engine.tokenizer.encode(prompt)
    text = engine.tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    return engine.tokenizer.encode(text, add_special_tokens=False)


def assert_same_output(got: Completion, expected: Completion) -> None:
    """The same tokens and text; logprobs equal up to float rounding (prefilled in other pieces)."""
    assert [(c.text, c.finish_reason, c.completion_tokens) for c in got.choices] == [
        (c.text, c.finish_reason, c.completion_tokens) for c in expected.choices
    ]
    for mine, theirs in zip(got.choices, expected.choices, strict=True):
        assert [t.token for t in mine.logprobs or []] == [t.token for t in theirs.logprobs or []]
        assert [t.logprob for t in mine.logprobs or []] == pytest.approx(
            [t.logprob for t in theirs.logprobs or []], abs=1e-4
        )


def test_a_repeated_prompt_prefills_only_its_last_token(cached, plain):
    stats = cached.prefix_cache
    for prompt in (PROMPTS[0], PROMPTS[1]):  # a chat prompt, and a text prompt shorter than a block
        expected = plain.generate(prompt, None, GREEDY_LOGPROBS)
        hits, reused = stats.hits, stats.tokens_reused
        first = cached.generate(prompt, None, GREEDY_LOGPROBS)
        assert (stats.hits, stats.tokens_reused) == (hits, reused)  # nothing like it was seen
        again = cached.generate(prompt, None, GREEDY_LOGPROBS)
        assert stats.hits == hits + 1
        assert stats.tokens_reused == reused + expected.prompt_tokens - 1
        assert_same_output(first, expected)
        assert_same_output(again, expected)
    assert stats.entries == 2  # a repeat does not keep a second copy


def test_prompts_sharing_a_system_message_reuse_the_shared_part(cached, plain):
    first = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "My wheel is bent."}]
    second = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Do you sell bells?"}]
    ids_first, ids_second = prompt_ids(cached, first), prompt_ids(cached, second)
    shared = next(i for i, (a, b) in enumerate(zip(ids_first, ids_second, strict=False)) if a != b)
    assert shared > 3 * 16  # whole blocks and a partial one

    cached.generate(first, None, GREEDY_LOGPROBS)
    got = cached.generate(second, None, GREEDY_LOGPROBS)
    assert (cached.prefix_cache.hits, cached.prefix_cache.tokens_reused) == (1, shared)
    assert_same_output(got, plain.generate(second, None, GREEDY_LOGPROBS))
    assert cached.prefix_cache.entries == 2  # neither prompt is the beginning of the other


def test_a_prompt_that_continues_a_kept_one_replaces_it(cached, plain):
    short = "The capital of France is Paris. The capital of Italy is Rome. The capital of Spain is"
    long = short + " Madrid. The capital of Germany is"
    ids_short = prompt_ids(cached, short)
    assert prompt_ids(cached, long)[: len(ids_short)] == ids_short and len(ids_short) > 16
    cached.generate(short, None, GREEDY_LOGPROBS)
    nbytes = cached.prefix_cache.nbytes
    got = cached.generate(long, None, GREEDY_LOGPROBS)
    assert cached.prefix_cache.tokens_reused == len(ids_short)
    assert cached.prefix_cache.entries == 1 and cached.prefix_cache.nbytes > nbytes
    assert_same_output(got, plain.generate(long, None, GREEDY_LOGPROBS))
    cached.generate(short, None, GREEDY_LOGPROBS)  # found in the longer prompt's entry
    assert cached.prefix_cache.tokens_reused == 2 * len(ids_short) - 1


def test_adapters_never_reuse_each_others_prefixes(tiny_dir, plain, tmp_path):
    folders = {name: make_adapter(tiny_dir, tmp_path / name, seed) for seed, name in enumerate("ab", 7)}
    prompt = PROMPTS[2]
    cached = HFEngine(tiny_dir, device="cpu")
    stats = cached.prefix_cache
    try:
        plain.load_adapter("iso-a", folders["a"])
        plain.load_adapter("iso-b", folders["b"])
        cached.load_adapter("a", folders["a"])
        base = cached.generate(prompt, None, GREEDY_LOGPROBS)
        with_a = cached.generate(prompt, "a", GREEDY_LOGPROBS)
        assert stats.hits == 0  # the base model's prefix is not the adapter's
        assert _logprobs(with_a) != pytest.approx(_logprobs(base), abs=1e-2)  # the adapter matters
        assert_same_output(with_a, plain.generate(prompt, "iso-a", GREEDY_LOGPROBS))
        assert_same_output(cached.generate(prompt, "a", GREEDY_LOGPROBS), with_a)
        assert stats.hits == 1 and stats.entries == 2

        # "a" comes back with other weights: its old prefix must not serve it.
        cached.remove_adapter("a")
        cached.load_adapter("a", folders["b"])
        with_b = cached.generate(prompt, "a", GREEDY_LOGPROBS)
        assert _logprobs(with_b) != pytest.approx(_logprobs(with_a), abs=1e-2)
        assert_same_output(with_b, plain.generate(prompt, "iso-b", GREEDY_LOGPROBS))
        assert stats.hits == 1
        # The base model's prefixes stay valid across adapter changes.
        assert_same_output(cached.generate(prompt, None, GREEDY_LOGPROBS), base)
        assert stats.hits == 2
    finally:
        cached.close()
        plain.remove_adapter("iso-a")
        plain.remove_adapter("iso-b")


def test_least_recently_used_prefixes_are_evicted_past_the_budget(tiny_dir, plain):
    prompts = ["The capital of France is", "def fib(n):", "1, 2, 3, 4,", "Once upon a time", "SELECT *"]
    probe = HFEngine(tiny_dir, device="cpu")
    try:
        probe.generate(prompts[0], None, GREEDY_LOGPROBS)
        per_token = probe.prefix_cache.nbytes / len(prompt_ids(probe, prompts[0]))
    finally:
        probe.close()
    budget = int(per_token * 12)  # room for two or three of these short prompts, not five
    engine = HFEngine(tiny_dir, device="cpu", prefix_cache_mb=budget / 2**20)
    stats = engine.prefix_cache
    try:
        for prompt in prompts:
            assert_same_output(
                engine.generate(prompt, None, GREEDY_LOGPROBS), plain.generate(prompt, None, GREEDY_LOGPROBS)
            )
            assert stats.nbytes <= stats.budget_bytes
        assert 2 <= stats.entries < len(prompts)
        engine.generate(prompts[-1], None, GREEDY_LOGPROBS)  # the newest is kept
        assert stats.hits == 1
        engine.generate(prompts[0], None, GREEDY_LOGPROBS)  # the oldest went first
        assert stats.hits == 1
        assert stats.nbytes <= stats.budget_bytes
    finally:
        engine.close()


def test_n_choices_joining_a_running_batch_start_from_a_cached_prefix(cached, plain):
    long = GenerationParams(max_tokens=40, temperature=0)
    several = GenerationParams(max_tokens=16, temperature=0.9, top_p=0.95, seed=11, n=3, logprobs=True)
    cached.generate(PROMPTS[2], None, GREEDY_LOGPROBS)  # keeps its prefix
    running = cached.stream(PROMPTS[0], None, long)
    next(running)  # decoding
    *_, joined = cached.stream(PROMPTS[2], None, several)
    *_, first = running
    assert cached.prefix_cache.hits == 1
    assert cached.peak_batch >= 2
    assert len(joined.choices) == 3
    assert_same_output(joined, plain.generate(PROMPTS[2], None, several))
    assert_same_output(first, plain.generate(PROMPTS[0], None, long))


def test_lookups_match_whole_blocks_then_the_tokens_after_them():
    cache = PrefixCache(budget_bytes=2**20)
    kept = list(range(100, 140))  # two whole blocks and 8 tokens
    cache.remember(cache.match(None, kept, version=0), _prefilled(len(kept)), version=0)
    assert cache.entries == 1

    assert cache.match(None, kept[:37] + [1, 2, 3], version=0).length == 37
    assert cache.match(None, kept + [1], version=0).length == 40
    assert cache.match(None, kept, version=0).length == 39  # the last token is fed again
    assert cache.match(None, kept[:10], version=0).length == 0  # shorter than a block: repeats only
    assert cache.match(None, [7] + kept, version=0).length == 0
    assert cache.match("adapter", kept, version=0).length == 0
    assert cache.tokens_reused == 37 + 40 + 39

    found = cache.match(None, kept[:20] + [5] * 30, version=0)
    layers = cache.start_cache(found, LlamaConfig(num_hidden_layers=2)).layers
    assert found.length == 20 and [layer.keys.shape[2] for layer in layers] == [20, 20]
    assert torch.equal(layers[1].values[0, 0, :, 0], torch.arange(20.0))


def test_an_adapters_prefixes_go_when_the_adapter_set_changes():
    cache = PrefixCache(budget_bytes=2**20)
    ids = list(range(50))
    for adapter in (None, "a"):
        cache.remember(cache.match(adapter, ids, version=3), _prefilled(len(ids)), version=3)
    assert cache.entries == 2
    assert cache.match("a", ids, version=4).length == 0
    assert cache.match(None, ids, version=4).length == 49
    assert cache.entries == 1
    # Prefilled while the set changed: not kept (its KV may be of other weights).
    started = cache.match("a", ids, version=4)
    cache.remember(started, _prefilled(len(ids)), version=5)
    assert cache.entries == 1


async def test_the_budget_setting_reaches_the_engine(model_cache, monkeypatch):
    monkeypatch.setenv("TUNERY_INFERENCE_PREFIX_CACHE_MB", "0.5")
    pool = EnginePool(model_cache, InferenceSettings(engine="hf"))
    try:
        engine = await pool.get("tiny-random-llama")
        assert engine.prefix_cache.budget_bytes == 2**19
    finally:
        pool.close()
    monkeypatch.setenv("TUNERY_INFERENCE_PREFIX_CACHE_MB", "-1")
    with pytest.raises(ValidationError, match="prefix_cache_mb"):
        InferenceSettings()


def _logprobs(completion: Completion) -> list[float]:
    return [t.logprob for t in completion.choices[0].logprobs]


def _prefilled(positions: int) -> DynamicCache:
    """A two-layer one-row cache as a prefill leaves it; values count the positions."""
    cache = DynamicCache()
    states = torch.arange(float(positions)).view(1, 1, positions, 1).expand(1, 2, positions, 4)
    for index in range(2):
        cache.update(states.clone(), states.clone(), index)
    return cache
