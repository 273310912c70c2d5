"""The transformers + PEFT engine on the tiny random Llama, with a real (random) LoRA adapter."""

import json
import shutil
import threading
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer
from tunery_common.basemodels import ensure_base_model
from tunery_inference.engines.hf import Completion, GenerationParams, HFEngine, _Detokenizer
from tunery_inference.engines.outputs import Choice, Delta

MESSAGES = [{"role": "user", "content": "Write a haiku about autumn."}]
GREEDY = GenerationParams(max_tokens=24, temperature=0)


@pytest.fixture(scope="module")
def tiny_dir(model_cache) -> Path:
    return ensure_base_model("tiny-random-llama", model_cache)


def make_adapter(tiny_dir: Path, out: Path, seed: int) -> Path:
    """A LoRA adapter with random (non-zero) B matrices, so that it changes the model's outputs."""
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    config = LoraConfig(r=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], init_lora_weights=False)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        get_peft_model(model, config).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def adapter_dir(tiny_dir, tmp_path_factory) -> Path:
    return make_adapter(tiny_dir, tmp_path_factory.mktemp("adapter"), seed=1)


@pytest.fixture
def engine(tiny_dir) -> HFEngine:
    return HFEngine(tiny_dir, device="cpu")


def hf_greedy_ids(model_dir: Path, n: int) -> list[int]:
    """What transformers' own `generate` produces, as the reference for the engine's decode loop."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    prompt = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, return_dict=False)
    out = model.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False, eos_token_id=[])
    return out[0, len(prompt) :].tolist()


def collect(stream) -> tuple[list[str], Completion]:
    """The text deltas of a one-choice stream, and its Completion."""
    *deltas, choice, completion = list(stream)
    assert all(isinstance(d, Delta) and d.text and d.index == 0 for d in deltas)
    assert isinstance(choice, Choice) and completion.choices == [choice]
    return [d.text for d in deltas], completion


def test_greedy_is_deterministic_and_matches_transformers_generate(engine, tiny_dir):
    first = engine.generate(MESSAGES, None, GREEDY)
    assert engine.generate(MESSAGES, None, GREEDY) == first
    expected = engine.tokenizer.decode(hf_greedy_ids(tiny_dir, GREEDY.max_tokens), skip_special_tokens=True)
    assert first.text == expected
    assert first.completion_tokens == GREEDY.max_tokens


def test_adapter_changes_output_and_leaves_the_base_intact(engine, adapter_dir):
    before = engine.generate(MESSAGES, None, GREEDY)
    engine.load_adapter("a", adapter_dir)
    assert engine.has_adapter("a")
    assert engine.generate(MESSAGES, "a", GREEDY).text != before.text
    assert engine.generate(MESSAGES, None, GREEDY) == before


def test_adapter_output_equals_merged_model_output(engine, tiny_dir, adapter_dir, tmp_path):
    engine.load_adapter("a", adapter_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    merged.save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(tiny_dir).save_pretrained(tmp_path)
    merged_engine = HFEngine(tmp_path, device="cpu")
    assert engine.generate(MESSAGES, "a", GREEDY) == merged_engine.generate(MESSAGES, None, GREEDY)


def test_two_adapters_loading_is_idempotent(engine, tiny_dir, adapter_dir, tmp_path):
    engine.load_adapter("a", adapter_dir)
    out_a = engine.generate(MESSAGES, "a", GREEDY)
    engine.load_adapter("a", adapter_dir)
    engine.load_adapter("b", make_adapter(tiny_dir, tmp_path / "b", seed=2))
    out_b = engine.generate(MESSAGES, "b", GREEDY)
    assert out_b.text != out_a.text
    assert engine.generate(MESSAGES, "a", GREEDY) == out_a


@pytest.mark.parametrize("adapter", [None, "a"])
def test_stream_deltas_join_to_the_generated_text(engine, adapter_dir, adapter):
    engine.load_adapter("a", adapter_dir)
    params = GenerationParams(max_tokens=24, temperature=0.8, top_p=0.9, seed=7)
    deltas, completion = collect(engine.stream(MESSAGES, adapter, params))
    assert "".join(deltas) == completion.text
    assert completion == engine.generate(MESSAGES, adapter, params)


def test_max_tokens_ends_with_length(engine):
    completion = engine.generate(MESSAGES, None, GenerationParams(max_tokens=5, temperature=0))
    assert (completion.completion_tokens, completion.finish_reason) == (5, "length")


def test_max_tokens_is_clamped_to_the_context(engine):
    long = [{"role": "user", "content": "hello " * (engine.context_length - 40)}]
    prompt_tokens = engine.count_prompt_tokens(long)
    assert engine.context_length - 20 < prompt_tokens < engine.context_length
    completion = engine.generate(long, None, GenerationParams(max_tokens=100, temperature=0))
    assert completion.completion_tokens == engine.context_length - prompt_tokens
    assert completion.finish_reason == "length"


def test_a_prompt_longer_than_the_context_is_refused(engine):
    too_long = [{"role": "user", "content": "hello " * engine.context_length}]
    with pytest.raises(ValueError, match="context"):
        engine.generate(too_long, None, GREEDY)


def test_eos_from_the_generation_config_ends_with_stop(tiny_dir, tmp_path):
    ids = hf_greedy_ids(tiny_dir, GREEDY.max_tokens)
    eos = ids[len(ids) // 2]
    shutil.copytree(tiny_dir, tmp_path, dirs_exist_ok=True)
    config = json.loads((tmp_path / "generation_config.json").read_text())
    config["eos_token_id"] = [config["eos_token_id"], eos]
    (tmp_path / "generation_config.json").write_text(json.dumps(config))
    engine = HFEngine(tmp_path, device="cpu")
    completion = engine.generate(MESSAGES, None, GREEDY)
    cut = ids.index(eos)
    assert completion.finish_reason == "stop"
    assert completion.completion_tokens == cut + 1  # the eos token counts, its text does not
    assert completion.text == engine.tokenizer.decode(ids[:cut], skip_special_tokens=True)


def test_stop_strings_cut_the_text_in_both_modes(engine):
    full = engine.generate(MESSAGES, None, GREEDY).text
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    expected = full[: full.index(stop)]
    params = GenerationParams(max_tokens=GREEDY.max_tokens, temperature=0, stop=["never-in-output", stop])
    completion = engine.generate(MESSAGES, None, params)
    assert (completion.text, completion.finish_reason) == (expected, "stop")
    assert completion.completion_tokens < GREEDY.max_tokens
    deltas, streamed = collect(engine.stream(MESSAGES, None, params))
    assert "".join(deltas) == expected
    assert streamed == completion


def test_seed_makes_sampling_reproducible(engine):
    params = GenerationParams(max_tokens=20, temperature=1.0, seed=42)
    first = engine.generate(MESSAGES, None, params)
    assert engine.generate(MESSAGES, None, params) == first
    other = GenerationParams(max_tokens=20, temperature=1.0, seed=43)
    assert engine.generate(MESSAGES, None, other).text != first.text


def test_usage_counts_the_prompt(engine):
    completion = engine.generate(MESSAGES, None, GenerationParams(max_tokens=3))
    assert completion.prompt_tokens == engine.count_prompt_tokens(MESSAGES) > 0


def test_unknown_adapter_raises_key_error(engine):
    with pytest.raises(KeyError, match="nope"):
        engine.generate(MESSAGES, "nope", GREEDY)
    with pytest.raises(KeyError, match="nope"):
        engine.stream(MESSAGES, "nope", GREEDY)
    with pytest.raises(KeyError, match="nope"):
        engine.remove_adapter("nope")


def test_remove_adapter(engine, tiny_dir, adapter_dir, tmp_path):
    base = engine.generate(MESSAGES, None, GREEDY)
    engine.load_adapter("a", adapter_dir)
    engine.load_adapter("b", make_adapter(tiny_dir, tmp_path / "b", seed=2))
    out_a = engine.generate(MESSAGES, "a", GREEDY)
    engine.remove_adapter("a")
    assert not engine.has_adapter("a") and engine.has_adapter("b")
    with pytest.raises(KeyError):
        engine.generate(MESSAGES, "a", GREEDY)
    engine.remove_adapter("b")  # the last one: back to the plain model
    assert engine.generate(MESSAGES, None, GREEDY) == base
    engine.load_adapter("a", adapter_dir)
    assert engine.generate(MESSAGES, "a", GREEDY) == out_a


@pytest.mark.parametrize("abandon", ["close", "drop"])
def test_an_abandoned_stream_releases_the_engine(engine, abandon):
    stream = engine.stream(MESSAGES, None, GenerationParams(max_tokens=200, temperature=0))
    assert isinstance(next(stream), Delta)
    if abandon == "close":
        stream.close()
    else:
        del stream  # CPython closes a generator when its last reference goes
    done = threading.Event()
    thread = threading.Thread(target=lambda: (engine.generate(MESSAGES, None, GREEDY), done.set()))
    thread.start()
    thread.join(timeout=60)
    assert done.is_set()


def test_detokenizer_deltas_are_exact_for_multibyte_text(engine):
    text = "Grüße, 世界! 🦩 naïve  two spaces\n\tend 龘"  # 世界, 🦩 and 龘 are split over byte tokens
    ids = engine.tokenizer.encode(text, add_special_tokens=False)
    detokenizer = _Detokenizer(engine.tokenizer)
    deltas = [detokenizer.push(i) for i in ids] + [detokenizer.flush()]
    assert "".join(deltas) == text
    assert not any("\ufffd" in d for d in deltas)  # no half characters on the way


def test_detokenizer_flushes_a_cut_off_character(engine):
    ids = engine.tokenizer.encode("ok 龘", add_special_tokens=False)[:-1]  # its last byte is missing
    detokenizer = _Detokenizer(engine.tokenizer)
    deltas = [detokenizer.push(i) for i in ids] + [detokenizer.flush()]
    assert "".join(deltas) == engine.tokenizer.decode(ids)
    assert deltas[-1].endswith("\ufffd")


@pytest.mark.parametrize("kwargs", [{"max_tokens": 0}, {"temperature": -0.1}, {"top_p": 0}, {"top_p": 1.5}])
def test_bad_params_are_refused(kwargs):
    with pytest.raises(ValueError):
        GenerationParams(**kwargs)
