"""A lone adapter merged into the base weights: the same tokens as the hooked path, exact base
weights after any number of merges, rows of other adapters joining a merged batch mid-stream,
and eviction of a merged adapter."""

import threading
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from test_inference_batching import GREEDY, PROMPTS, make_adapter
from transformers import AutoModelForCausalLM, LlamaConfig
from tunery_common.basemodels import ensure_base_model
from tunery_inference.engines.hf import GenerationParams, HFEngine
from tunery_inference.engines.lora_merge import LoneAdapterMerge
from tunery_inference.engines.lora_weights import UnsupportedAdapter, linear_layers, read_lora

LONG = GenerationParams(max_tokens=40, temperature=0)


@pytest.fixture(scope="module")
def tiny_dir(model_cache) -> Path:
    return ensure_base_model("tiny-random-llama", model_cache)


@pytest.fixture(scope="module")
def adapters(tiny_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {name: make_adapter(tiny_dir, root / name, seed) for seed, name in enumerate("ab", start=1)}


@pytest.fixture
def engines(tiny_dir, adapters):
    """Make engines with the adapters loaded; all are closed at the end."""
    made = []

    def make(**kwargs) -> HFEngine:
        engine = HFEngine(tiny_dir, device="cpu", **kwargs)
        made.append(engine)
        for name, folder in adapters.items():
            engine.load_adapter(name, folder)
        return engine

    yield make
    for engine in made:
        engine.close()


def original_weights(tiny_dir: Path) -> dict[str, torch.Tensor]:
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    return {name: param.detach() for name, param in model.named_parameters()}


def base_weights(engine: HFEngine) -> dict[str, torch.Tensor]:
    return {name: param.detach().clone() for name, param in engine.adapters.model.named_parameters()}


def assert_same_weights(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    assert all(torch.equal(actual[name], expected[name]) for name in expected)


def together(engine: HFEngine, requests: list[tuple]) -> list:
    with engine.model_lock:  # every request is queued before the next step: one batch
        streams = [engine.stream(*request) for request in requests]
    return [list(stream)[-1] for stream in streams]


def test_a_merged_lone_adapter_gives_the_tokens_of_the_hooked_path(engines):
    merging, hooked = engines(merge_after_passes=1), engines(merge_after_passes=None)
    requests = [(prompt, "a", GREEDY) for prompt in PROMPTS]
    expected = together(hooked, requests)
    assert together(merging, requests) == expected
    assert merging.adapters.merge.adapter == "a" and merging.adapters.merge.merges == 1
    assert hooked.adapters.merge.merges == 0
    # Alone, and with logprobs: the same tokens, the values equal up to float rounding.
    params = GenerationParams(max_tokens=20, temperature=0, logprobs=True, top_logprobs=2)
    merged_one, hooked_one = (
        merging.generate(PROMPTS[1], "a", params),
        hooked.generate(PROMPTS[1], "a", params),
    )
    assert [t.token for t in merged_one.choices[0].logprobs] == [
        t.token for t in hooked_one.choices[0].logprobs
    ]
    assert [t.logprob for t in merged_one.choices[0].logprobs] == pytest.approx(
        [t.logprob for t in hooked_one.choices[0].logprobs], abs=1e-4
    )
    assert merged_one.choices[0].text != hooked.generate(PROMPTS[1], None, params).choices[0].text


def test_rows_of_another_adapter_and_of_the_base_join_a_merged_batch_mid_stream(engines):
    engine = engines(merge_after_passes=2)
    requests = [
        (PROMPTS[0], "a", LONG),
        (PROMPTS[1], None, LONG),
        (PROMPTS[2], "b", LONG),
        (PROMPTS[3], "a", LONG),
    ]
    alone = [engine.generate(*request) for request in requests]
    assert all(c.completion_tokens == LONG.max_tokens for c in alone)  # no row ends early
    assert len({c.text for c in alone}) == len(alone)
    engine.generate(PROMPTS[1], None, GREEDY)  # back on the original weights

    # Stop the decode loop in the first forward pass that runs on merged weights: the lone "a"
    # row is then mid-stream, and the others join it.
    merged_forward, go = threading.Event(), threading.Event()
    seen: list[str | None] = []  # the merged adapter during each forward pass

    def pause_once_merged(module, args):
        seen.append(engine.adapters.merge.adapter)
        if seen[-1] == "a" and not merged_forward.is_set():
            merged_forward.set()
            assert go.wait(timeout=300)

    hook = engine.adapters.model.get_input_embeddings().register_forward_pre_hook(pause_once_merged)
    try:
        first = engine.stream(*requests[0])
        assert merged_forward.wait(timeout=300)
        joining = [engine.stream(*request) for request in requests[1:]]
        go.set()
        outputs = [list(stream)[-1] for stream in [first, *joining]]
    finally:
        hook.remove()
    assert outputs == alone
    assert seen[seen.index("a") + 1] is None  # the base row's prefill ran on the original weights
    assert engine.peak_batch == len(requests)


def test_base_weights_stay_bit_identical_through_merge_cycles(engines, tiny_dir):
    engine = engines(merge_after_passes=1)
    expected = original_weights(tiny_dir)
    base_out = engine.generate(PROMPTS[1], None, GREEDY)
    for _ in range(5):
        engine.generate(PROMPTS[1], "a", GREEDY)
        assert engine.generate(PROMPTS[1], None, GREEDY) == base_out
        engine.generate(PROMPTS[1], "b", GREEDY)
        together(engine, [(PROMPTS[0], "a", GREEDY), (PROMPTS[4], "b", GREEDY)])
    assert engine.adapters.merge.merges >= 10
    with engine.model_lock:
        engine.adapters.merge.unmerge()
    assert_same_weights(base_weights(engine), expected)
    engine.remove_adapter("a")
    engine.remove_adapter("b")  # the last one: the merge buffers are freed
    assert engine.adapters.merge.adapter is None and not engine.adapters.on_device()
    assert_same_weights(base_weights(engine), expected)


def test_merge_and_unmerge_restore_the_very_parameters(tiny_dir, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    config = LoraConfig(r=4, target_modules=["q_proj", "o_proj", "up_proj"], init_lora_weights=False)
    peft_model = get_peft_model(model, config).eval()
    ids = torch.tensor([[1, 42, 7, 1024, 99, 5]])
    with torch.inference_mode():
        with_adapter = peft_model(ids).logits  # PEFT's own LoRA layers: the reference
    peft_model.save_pretrained(tmp_path)
    base = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval()
    before = dict(base.named_parameters())
    values = {name: param.detach().clone() for name, param in before.items()}
    with torch.inference_mode():
        base_logits = base(ids).logits
    linears = linear_layers(base)
    weights = read_lora(tmp_path, linears)
    merge = LoneAdapterMerge(linears)
    for _ in range(50):
        merge.merge("a", weights)
        merge.unmerge()
    merge.merge("a", weights)
    changed = [n for n, p in base.named_parameters() if p is not before[n]]
    assert len(changed) == 3 * model.config.num_hidden_layers  # the target layers' weights only
    with torch.inference_mode():
        merged = base(ids).logits
    torch.testing.assert_close(merged, with_adapter, rtol=1e-4, atol=1e-4)  # float rounding apart
    assert not torch.allclose(merged, base_logits, rtol=1e-2, atol=1e-2)
    merge.unmerge()
    after = dict(base.named_parameters())
    assert all(after[name] is before[name] for name in before)
    assert all(torch.equal(after[name], values[name]) for name in before)


def test_evicting_or_removing_a_merged_adapter_unmerges_it_first(engines, tiny_dir, adapters):
    engine = engines(merge_after_passes=1, max_loras=1)  # loading "b" evicted "a"
    reference = engines(merge_after_passes=None)
    expected = original_weights(tiny_dir)
    base_out = engine.generate(PROMPTS[2], None, GREEDY)
    out_b = engine.generate(PROMPTS[2], "b", GREEDY)
    assert engine.adapters.merge.adapter == "b"
    engine.load_adapter("c", adapters["a"])  # evicts the merged "b", with no forward pass after
    assert not engine.adapters.in_model("b") and engine.adapters.merge.adapter is None
    assert_same_weights(base_weights(engine), expected)
    out_a = engine.generate(PROMPTS[2], "a", GREEDY)  # brings "a" back: evicts "c"
    assert engine.adapters.in_model("a") and engine.adapters.merge.adapter == "a"
    assert engine.generate(PROMPTS[2], "b", GREEDY) == out_b  # "b" again: "a" is evicted
    assert (out_a, out_b) == tuple(reference.generate(PROMPTS[2], name, GREEDY) for name in "ab")
    engine.remove_adapter("a")
    engine.remove_adapter("b")  # merged, and the model's last adapter
    assert engine.adapters.merge.adapter is None and not engine.adapters.on_device()
    assert_same_weights(base_weights(engine), expected)
    assert engine.generate(PROMPTS[2], None, GREEDY) == base_out


def test_adapters_other_than_plain_lora_are_refused_with_the_reason(engines, tiny_dir, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], use_dora=True, init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(tmp_path / "dora")
    engine = engines()
    with pytest.raises(UnsupportedAdapter, match="use_dora"):
        engine.load_adapter("dora", tmp_path / "dora")
    assert not engine.has_adapter("dora")  # nothing kept: a request for it is refused
    with pytest.raises(KeyError):
        engine.generate(PROMPTS[0], "dora", GREEDY)


def test_an_adapter_of_another_base_model_is_refused(engines, tmp_path):
    wider = LlamaConfig(
        hidden_size=96, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, vocab_size=512
    )
    config = LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False)
    get_peft_model(AutoModelForCausalLM.from_config(wider), config).save_pretrained(tmp_path / "other")
    engine = engines()
    with pytest.raises(UnsupportedAdapter, match="another base model"):
        engine.load_adapter("other", tmp_path / "other")
    assert not engine.has_adapter("other")
