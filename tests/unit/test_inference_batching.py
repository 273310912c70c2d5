"""Continuous batching in the transformers engine: a request decoded in a batch (joining it,
leaving it, beside rows of other adapters) produces what it produces alone, to the token."""

import shutil
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM
from tunery_common.basemodels import ensure_base_model
from tunery_inference.engines.hf import Completion, GenerationParams, HFEngine
from tunery_inference.engines.outputs import Delta

# Prompts of different lengths on which the random model's greedy output changes course midway.
PROMPTS = [
    [{"role": "user", "content": "Write a haiku about autumn."}],
    "The capital of France is",
    [
        {"role": "system", "content": "You answer support tickets for a bicycle shop, politely."},
        {"role": "user", "content": "My order #4411 arrived with a bent wheel. What now?"},
    ],
    "def fib(n):",
    "1, 2, 3, 4,",
]
GREEDY = GenerationParams(max_tokens=20, temperature=0)


@pytest.fixture(scope="module")
def tiny_dir(model_cache) -> Path:
    return ensure_base_model("tiny-random-llama", model_cache)


def make_adapter(tiny_dir: Path, out: Path, seed: int) -> Path:
    """A random (non-zero) LoRA adapter, so that it changes the model's outputs."""
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    config = LoraConfig(r=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        get_peft_model(model, config).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def adapters(tiny_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {name: make_adapter(tiny_dir, root / name, seed) for seed, name in enumerate("abc", start=1)}


@pytest.fixture
def engine(tiny_dir):
    engine = HFEngine(tiny_dir, device="cpu")
    yield engine
    engine.close()


def together(engine: HFEngine, requests: list[tuple]) -> list[Completion]:
    """Runs the requests in one batch: they are all queued while the loop is held between steps."""
    with engine.model_lock:
        streams = [engine.stream(prompt, adapter, params) for prompt, adapter, params in requests]
    return [_last(stream) for stream in streams]


def _tokens(completion: Completion) -> list:
    """What was generated, without the logprob values."""
    return [
        (c.text, c.finish_reason, c.completion_tokens, [t.token for t in c.logprobs or []])
        for c in completion.choices
    ]


def _last(stream) -> Completion:
    *_, completion = stream
    return completion


def test_a_batch_of_prompts_gives_each_prompt_its_own_greedy_tokens(engine):
    alone = [engine.generate(prompt, None, GREEDY) for prompt in PROMPTS]
    assert engine.peak_batch == 1
    batched = together(engine, [(prompt, None, GREEDY) for prompt in PROMPTS])
    assert engine.peak_batch == len(PROMPTS)
    assert batched == alone
    assert len({c.text for c in alone}) == len(PROMPTS) - 1  # the two chat prompts agree


def test_seeded_sampling_and_n_choices_are_the_same_in_a_batch(engine):
    params = [
        GenerationParams(max_tokens=16, temperature=0.9, top_p=0.95, seed=11, n=3),
        GenerationParams(
            max_tokens=8, temperature=1.0, seed=5, presence_penalty=1.0, logprobs=True, top_logprobs=2
        ),
        GenerationParams(max_tokens=12, temperature=0, stop=["\n"]),
    ]
    requests = [(prompt, None, p) for prompt, p in zip(PROMPTS, params, strict=False)]
    alone = [engine.generate(*request) for request in requests]
    batched = together(engine, requests)
    # The same tokens; logprobs agree up to float rounding (a batch sums in another order).
    assert [_tokens(c) for c in batched] == [_tokens(c) for c in alone]
    assert all(
        a.logprob == pytest.approx(b.logprob, abs=1e-4)
        for x, y in zip(batched, alone, strict=True)
        for a, b in zip(x.choices[0].logprobs or [], y.choices[0].logprobs or [], strict=True)
    )
    # 3 choices + 1 + 1: every prompt was cached by its first run, so each joins the batch at its
    # last prompt token (the third one leaves at once: its first token is its stop string).
    assert alone[2].choices[0].text == "" and alone[2].finish_reason == "stop"
    assert engine.peak_batch == 5
    assert len(alone[0].choices) == 3


def test_rows_of_different_adapters_share_a_batch(engine, adapters):
    for name, folder in adapters.items():
        engine.load_adapter(name, folder)
    requests = [(PROMPTS[1], adapter, GREEDY) for adapter in (None, "a", "b", "c")]
    requests += [(PROMPTS[3], None, GREEDY), (PROMPTS[4], "a", GREEDY)]
    alone = [engine.generate(*request) for request in requests]
    assert len({c.text for c in alone[:4]}) == 4  # each adapter changes the output its own way
    assert together(engine, requests) == alone
    assert engine.peak_batch == len(requests)


def test_a_request_joins_a_running_batch_and_the_batch_goes_on_when_a_row_leaves(engine):
    long = GenerationParams(max_tokens=40, temperature=0)
    first_alone = engine.generate(PROMPTS[0], None, long)
    second_alone = engine.generate(PROMPTS[2], None, GREEDY)
    first = engine.stream(PROMPTS[0], None, long)
    deltas = [next(first)]  # the first request is decoding
    second = _last(engine.stream(PROMPTS[2], None, GREEDY))  # joins, ends, leaves
    abandoned = engine.stream(PROMPTS[1], None, long)
    assert isinstance(next(abandoned), Delta)
    abandoned.close()  # its row leaves at the next step
    rest = list(first)
    assert second == second_alone
    assert rest[-1] == first_alone
    assert "".join(d.text for d in deltas + rest if isinstance(d, Delta)) == first_alone.text
    assert engine.peak_batch >= 2


def test_a_long_prompt_prefilled_in_chunks_gives_the_same_tokens(tiny_dir):
    long_prompt = [{"role": "user", "content": "Tell me about bicycles. " * 30}]
    whole = HFEngine(tiny_dir, device="cpu")
    chunked = HFEngine(tiny_dir, device="cpu", prefill_chunk=16)
    try:
        assert chunked.count_prompt_tokens(long_prompt) > 16 * 5
        expected = whole.generate(long_prompt, None, GREEDY)
        # Chunks of the long prompt alternate with decoding steps of the short one.
        short = chunked.stream(PROMPTS[1], None, GenerationParams(max_tokens=60, temperature=0))
        next(short)
        assert chunked.generate(long_prompt, None, GREEDY) == expected
        assert _last(short) == whole.generate(
            PROMPTS[1], None, GenerationParams(max_tokens=60, temperature=0)
        )
    finally:
        whole.close()
        chunked.close()


def test_least_recently_used_adapters_are_evicted_and_load_again_on_demand(tiny_dir, adapters):
    engine = HFEngine(tiny_dir, device="cpu", max_loras=1, max_cpu_loras=1)
    try:
        engine.load_adapter("a", adapters["a"])
        out_a = engine.generate(PROMPTS[0], "a", GREEDY)
        engine.load_adapter("b", adapters["b"])
        assert engine.adapters.in_model("b") and not engine.adapters.in_model("a")
        assert engine.has_adapter("a")  # still servable: it comes back on its next request
        assert engine.generate(PROMPTS[0], "a", GREEDY) == out_a
        assert engine.adapters.in_model("a") and not engine.adapters.in_model("b")
        # Adapters in use are never evicted: two running at once both stay until they finish.
        with engine.model_lock:  # holds the batch: both requests are surely running
            busy = engine.stream(PROMPTS[0], "a", GREEDY)
            other = engine.stream(PROMPTS[0], "b", GREEDY)
            assert engine.adapters.in_model("a") and engine.adapters.in_model("b")
        assert _last(busy) == out_a
        out_b = _last(other)
        assert out_b.text != out_a.text
        with engine.model_lock:  # the step in which they ended (and were released) is over
            assert [engine.adapters.in_model(n) for n in "ab"].count(True) == 1
    finally:
        engine.close()


def test_a_removed_adapter_serves_its_running_request_to_the_end(engine, adapters):
    engine.load_adapter("a", adapters["a"])
    alone = engine.generate(PROMPTS[0], "a", GREEDY)
    with engine.model_lock:  # between steps: the request is queued, its adapter pinned
        running = engine.stream(PROMPTS[0], "a", GREEDY)
        engine.remove_adapter("a")
        assert not engine.has_adapter("a")
        with pytest.raises(KeyError):  # a new request for it is refused at once
            engine.stream(PROMPTS[0], "a", GREEDY)
        assert engine.adapters.in_model("a")  # kept on the device for the running request
    assert _last(running) == alone  # decoded to its end with the adapter
    with engine.model_lock:  # the step in which it ended (and released the adapter) is over
        assert not engine.adapters.in_model("a")
        assert engine.adapters.on_device() == {}


def test_an_evicted_adapter_whose_folder_is_gone_is_no_longer_served(tiny_dir, adapters, tmp_path):
    engine = HFEngine(tiny_dir, device="cpu", max_loras=1, max_cpu_loras=1)
    try:
        engine.load_adapter("gone", shutil.copytree(adapters["a"], tmp_path / "gone"))
        engine.load_adapter("b", adapters["b"])
        shutil.rmtree(tmp_path / "gone")
        with pytest.raises(KeyError, match="gone"):
            engine.stream(PROMPTS[0], "gone", GREEDY)
        assert not engine.has_adapter("gone")
    finally:
        engine.close()
