"""Sampling of one sequence (penalties, logit bias, logprobs, seeds) on hand-made logits, and the
same parameters through the HF engine on the tiny random Llama: n choices, logprobs checked
against the model's own distribution."""

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM
from tunery_common.basemodels import ensure_base_model
from tunery_inference.engines.errors import RequestError
from tunery_inference.engines.hf import GenerationParams, HFEngine
from tunery_inference.engines.outputs import Choice, Completion, Delta
from tunery_inference.engines.sampling import SequenceSampler

MESSAGES = [{"role": "user", "content": "Write a haiku about autumn."}]


def greedy_tokens(sampler: SequenceSampler, logits: torch.Tensor, steps: int) -> list[int]:
    return [sampler.step(logits).token for _ in range(steps)]


def test_presence_penalty_moves_greedy_off_tokens_already_generated():
    logits = torch.tensor([0.0, 3.0, 2.5, 1.9])
    plain = SequenceSampler(GenerationParams(temperature=0), seed=None, device="cpu")
    assert greedy_tokens(plain, logits, 3) == [1, 1, 1]
    params = GenerationParams(temperature=0, presence_penalty=1.0)
    # Once used, token 1 is at 2.0: token 2 (2.5) wins, then 1 again (2.0 > 1.5 > 1.9 - 0), and
    # 1 stays at 2.0: the presence penalty does not grow with use.
    assert greedy_tokens(SequenceSampler(params, seed=None, device="cpu"), logits, 4) == [1, 2, 1, 1]


def test_frequency_penalty_grows_with_each_use():
    logits = torch.tensor([0.0, 3.0, 1.8])
    sampler = SequenceSampler(GenerationParams(temperature=0, frequency_penalty=0.5), seed=None, device="cpu")
    # Token 1 falls by 0.5 per use: 3.0, 2.5, 2.0, then 1.5 < 1.8.
    assert greedy_tokens(sampler, logits, 4) == [1, 1, 1, 2]


def test_logit_bias_is_added_before_sampling():
    logits = torch.tensor([0.0, 3.0, 1.0])
    sampler = SequenceSampler(GenerationParams(temperature=0, logit_bias={2: 2.5}), seed=None, device="cpu")
    assert greedy_tokens(sampler, logits, 2) == [2, 2]
    banned = SequenceSampler(GenerationParams(temperature=0, logit_bias={1: -100}), seed=None, device="cpu")
    assert greedy_tokens(banned, logits, 1) == [2]


def test_logprobs_are_of_the_adjusted_distribution_before_temperature():
    logits = torch.tensor([0.0, 2.0, 1.0, -1.0])
    params = GenerationParams(temperature=0.5, logprobs=True, top_logprobs=2, logit_bias={3: 4.0}, seed=1)
    sampled = SequenceSampler(params, seed=1, device="cpu").step(logits)
    expected = torch.log_softmax(torch.tensor([0.0, 2.0, 1.0, 3.0]), dim=-1)
    assert sampled.logprob == pytest.approx(float(expected[sampled.token]))
    assert sampled.top == [(3, pytest.approx(float(expected[3]))), (1, pytest.approx(float(expected[1])))]


def test_a_seed_reproduces_the_draws_and_choices_get_their_own_seeds():
    logits = torch.zeros(1000)
    params = GenerationParams(temperature=1.0, seed=7)
    draws = [
        greedy_tokens(SequenceSampler(params, params.choice_seed(0), "cpu"), logits, 8) for _ in range(2)
    ]
    assert draws[0] == draws[1]
    assert params.choice_seed(0) == 7
    seeds = {params.choice_seed(i) for i in range(5)}
    assert len(seeds) == 5 and all(0 <= s < 2**63 for s in seeds)
    other = greedy_tokens(SequenceSampler(params, params.choice_seed(1), "cpu"), logits, 8)
    assert other != draws[0]


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"n": 0}, "n"),
        ({"presence_penalty": 2.5}, "presence_penalty"),
        ({"frequency_penalty": -3}, "frequency_penalty"),
        ({"top_logprobs": 21}, "top_logprobs"),
        ({"logit_bias": {5: 101}}, "logit_bias"),
        ({"logit_bias": {-1: 1}}, "logit_bias"),
        ({"max_tokens": 0}, "max_tokens"),
    ],
)
def test_bad_params_name_the_parameter(kwargs, param):
    with pytest.raises(RequestError) as info:
        GenerationParams(**kwargs)
    assert info.value.param == param and param in info.value.message


# -- through the engine -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_dir(model_cache) -> Path:
    return ensure_base_model("tiny-random-llama", model_cache)


@pytest.fixture(scope="module")
def engine(tiny_dir) -> HFEngine:
    return HFEngine(tiny_dir, device="cpu")


def test_logprobs_match_the_models_distribution(engine, tiny_dir):
    params = GenerationParams(max_tokens=6, temperature=0, logprobs=True, top_logprobs=3)
    choice = engine.generate(MESSAGES, None, params).choices[0]

    # The reference: transformers' greedy generation for the tokens, and one forward pass over
    # prompt and output for the logits at each position.
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval()
    prompt = engine.tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, return_dict=False)
    out = model.generate(torch.tensor([prompt]), max_new_tokens=6, do_sample=False, eos_token_id=[])
    generated = out[0, len(prompt) :].tolist()
    with torch.inference_mode():
        logits = model(torch.tensor([prompt + generated])).logits[0, len(prompt) - 1 : -1]
    assert len(choice.logprobs) == len(generated) == 6
    for entry, token, row in zip(choice.logprobs, generated, logits, strict=True):
        reference = torch.log_softmax(row.float(), dim=-1)
        assert entry.logprob == pytest.approx(float(reference[token]), abs=1e-4)
        assert entry.bytes == engine.vocabulary.token_bytes(token)
        # Greedy: the chosen token is the most likely one, reported first among the alternatives.
        assert entry.top_logprobs[0].bytes == entry.bytes
        top = reference.topk(3).values.tolist()
        assert [t.logprob for t in entry.top_logprobs] == pytest.approx(top, abs=1e-4)


def test_logprob_tokens_spell_the_text(engine):
    params = GenerationParams(max_tokens=12, temperature=1.0, seed=3, logprobs=True)
    choice = engine.generate(MESSAGES, None, params).choices[0]
    assert b"".join(e.bytes for e in choice.logprobs).decode() == choice.text
    for entry in choice.logprobs:
        assert choice.text[entry.text_offset :].startswith(entry.token)
        assert entry.logprob <= 0 and entry.top_logprobs == []


def test_n_choices_are_reproducible_and_the_first_is_the_single_choice(engine):
    params = GenerationParams(max_tokens=8, temperature=1.0, seed=11, n=3)
    completion = engine.generate(MESSAGES, None, params)
    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert len({c.text for c in completion.choices}) == 3
    assert completion.completion_tokens == sum(c.completion_tokens for c in completion.choices) == 24
    assert completion.prompt_tokens == engine.count_prompt_tokens(MESSAGES)  # counted once
    assert engine.generate(MESSAGES, None, params) == completion
    single = engine.generate(MESSAGES, None, GenerationParams(max_tokens=8, temperature=1.0, seed=11))
    assert single.choices[0] == completion.choices[0]


def test_a_stream_of_n_choices_delivers_each_choice_whole(engine):
    params = GenerationParams(max_tokens=8, temperature=1.0, seed=5, n=2, logprobs=True, top_logprobs=1)
    items = list(engine.stream(MESSAGES, None, params))
    completion = items[-1]
    assert isinstance(completion, Completion)
    assert completion == engine.generate(MESSAGES, None, params)
    for choice in completion.choices:
        deltas = [i for i in items if isinstance(i, Delta) and i.index == choice.index]
        assert "".join(d.text for d in deltas) == choice.text
        assert [e for d in deltas for e in d.logprobs] == choice.logprobs
    # Choice after choice: all of choice 0, its end, then choice 1.
    ends = [i for i, item in enumerate(items) if isinstance(item, Choice)]
    assert all(item.index == 0 for item in items[: ends[0]])


def test_stop_strings_drop_the_logprobs_of_tokens_after_them(engine):
    full = engine.generate(MESSAGES, None, GenerationParams(max_tokens=16, temperature=0)).text
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    params = GenerationParams(max_tokens=16, temperature=0, stop=[stop], logprobs=True)
    choice = engine.generate(MESSAGES, None, params).choices[0]
    assert choice.text == full[: full.index(stop)] and choice.finish_reason == "stop"
    assert all(e.text_offset < len(choice.text) for e in choice.logprobs)
    assert "".join(e.token for e in choice.logprobs).startswith(choice.text)


def test_penalties_change_what_the_engine_generates(engine):
    plain = engine.generate(MESSAGES, None, GenerationParams(max_tokens=12, temperature=0, logprobs=True))
    penalised = engine.generate(
        MESSAGES, None, GenerationParams(max_tokens=12, temperature=0, presence_penalty=2.0, logprobs=True)
    )
    plain_tokens = [e.token for e in plain.choices[0].logprobs]
    tokens = [e.token for e in penalised.choices[0].logprobs]
    # The random model repeats itself greedily; a presence penalty of 2 outweighs its tiny margins.
    assert len(set(plain_tokens)) < len(plain_tokens)
    assert len(set(tokens)) == len(tokens) == 12


def test_logit_bias_beyond_the_vocabulary_is_refused(engine):
    with pytest.raises(RequestError) as info:
        engine.stream(MESSAGES, None, GenerationParams(logit_bias={engine.vocab_size: 1.0}))
    assert info.value.param == "logit_bias"


def test_logit_bias_steers_the_engine(engine):
    token = engine.tokenizer.encode(" autumn", add_special_tokens=False)[0]
    params = GenerationParams(max_tokens=4, temperature=1.0, seed=0, logit_bias={token: 100})
    assert engine.generate(MESSAGES, None, params).text == engine.tokenizer.decode([token] * 4)
