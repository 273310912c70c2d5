"""Packed micro-batches on the tiny random Llama: no token sees another sequence, whether packed in
one row with per-sequence attention or in first-fit-decreasing rows under a block-diagonal mask."""

import copy
import random

import pytest
import torch
from peft import LoraConfig, get_peft_model
from trainer_helpers import one_torch_thread
from transformers import AutoModelForCausalLM, MistralConfig, MistralForCausalLM
from tunery_common.basemodels import ensure_base_model
from tunery_trainer.data import IGNORE_INDEX, TokenizedExample
from tunery_trainer.hyperparams import ALL_LINEAR
from tunery_trainer.label_scores import score_labels
from tunery_trainer.packed_attention import NAME, use_packed_attention
from tunery_trainer.packing import first_fit_decreasing, make_batch

LENGTHS = [30, 7, 55, 12, 40, 3, 25, 18]
# (packing, one_row): one row with per-sequence attention, rows under a mask, padded rows
LAYOUTS = {"one_row": (True, True), "rows": (True, False), "padded": (False, False)}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def model(model_cache):
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(ensure_base_model("tiny-random-llama", model_cache))
    assert use_packed_attention(base) and base.config._attn_implementation == NAME
    model = get_peft_model(base, LoraConfig(r=4, target_modules=list(ALL_LINEAR), init_lora_weights=False))
    return model.eval()


@pytest.fixture(scope="module")
def model64(model):
    """The same model in float64: sums of gradients over ~100 tokens differ in fp32 by rounding
    alone (1.8e-5 on some CPUs), which would hide a real difference of that size."""
    return copy.deepcopy(model).double()


@pytest.fixture(scope="module")
def sdpa_model(model_cache):
    """The same model on transformers' own SDPA, as models with sliding windows stay."""
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(ensure_base_model("tiny-random-llama", model_cache))
    assert base.config._attn_implementation == "sdpa"
    model = get_peft_model(base, LoraConfig(r=4, target_modules=list(ALL_LINEAR), init_lora_weights=False))
    return model.eval()


@pytest.fixture(scope="module")
def sequences():
    """Random tokens, the second half of each sequence trained."""
    rng = random.Random(0)
    out = []
    for n in LENGTHS:
        ids = [rng.randrange(100, 40000) for _ in range(n)]
        labels = [IGNORE_INDEX if i < n // 2 else t for i, t in enumerate(ids)]
        out.append(TokenizedExample(ids, labels, False))
    return out


def per_sequence_losses(model, sequences, layout: str) -> torch.Tensor:
    packing, one_row = LAYOUTS[layout]
    batch = make_batch(sequences, packing, pad_id=2, one_row=one_row)
    return score_labels(model, batch).per_sequence(len(sequences))


def test_first_fit_decreasing_fills_rows_as_wide_as_the_longest():
    rows = first_fit_decreasing(LENGTHS)

    assert sorted(i for row in rows for i in row) == list(range(len(LENGTHS)))
    assert all(sum(LENGTHS[i] for i in row) <= max(LENGTHS) for row in rows)
    assert rows == [[2], [4, 3, 5], [0, 6], [7, 1]]  # 55 | 40+12+3 | 30+25 | 18+7


def test_a_packed_batch_restarts_positions_per_sequence_and_pads_only_row_ends(sequences):
    batch = make_batch(sequences, packing=True, pad_id=2)

    assert batch.attention_mask is None and batch.input_ids.shape == (4, 55)
    assert batch.n_tokens == sum(LENGTHS) == int((batch.sequence_ids >= 0).sum())
    row = batch.sequence_ids[1].tolist()  # sequences 4, 3, 5 then padding
    assert row == [4] * 40 + [3] * 12 + [5] * 3
    assert batch.position_ids[1].tolist() == list(range(40)) + list(range(12)) + list(range(3))
    last = batch.sequence_ids[3].tolist()
    assert last == [7] * 18 + [1] * 7 + [-1] * 30
    assert batch.position_ids[3, 25:].tolist() == [0] * 30  # padding: each a sequence of its own
    assert (batch.labels[batch.sequence_ids < 0] == IGNORE_INDEX).all()


def test_one_packed_row_holds_every_sequence_with_its_bounds(sequences):
    batch = make_batch(sequences, packing=True, pad_id=2, one_row=True)

    assert batch.input_ids.shape == (1, sum(LENGTHS)) and batch.attention_mask is None
    assert batch.sequence_bounds == [
        (0, 30),
        (30, 37),
        (37, 92),
        (92, 104),
        (104, 144),
        (144, 147),
        (147, 172),
        (172, 190),
    ]
    assert batch.position_ids[0, 30:40].tolist() == list(range(7)) + [0, 1, 2]
    assert (batch.sequence_ids >= 0).all() and batch.n_tokens == sum(LENGTHS)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_packed_sequences_score_as_if_each_ran_alone(model, sequences, layout):
    with torch.no_grad():
        together = per_sequence_losses(model, sequences, layout)
        alone = torch.cat([per_sequence_losses(model, [s], "padded") for s in sequences])

    assert together.tolist() == pytest.approx(alone.tolist(), abs=1e-5, rel=1e-6)
    assert (alone < 0).all()  # log-probabilities of real labels: the comparison is not of zeros


def test_rows_under_transformers_own_block_diagonal_mask_score_as_if_alone(sdpa_model, sequences):
    with torch.no_grad():
        together = per_sequence_losses(sdpa_model, sequences, "rows")
        alone = torch.cat([per_sequence_losses(sdpa_model, [s], "padded") for s in sequences])

    assert together.tolist() == pytest.approx(alone.tolist(), abs=1e-5, rel=1e-6)


@pytest.mark.parametrize("layout", ["one_row", "rows"])
def test_packed_gradients_equal_those_of_separate_runs(model64, sequences, layout):
    model = model64

    def lora_grads(batches) -> torch.Tensor:
        model.zero_grad()
        for batch in batches:
            (-score_labels(model, batch).logprobs.sum()).backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])
        model.zero_grad()
        return grads

    packed = lora_grads([make_batch(sequences, True, 2, one_row=LAYOUTS[layout][1])])
    separate = lora_grads([make_batch([s], False, 2) for s in sequences])

    assert packed.abs().max() > 0
    torch.testing.assert_close(packed, separate, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("layout", ["one_row", "rows"])
def test_a_sequence_changed_elsewhere_in_the_row_does_not_change_its_neighbours(model, sequences, layout):
    # Rewrite sequence 4 entirely (in "rows" it shares row 1 with 3 and 5): the others score the same.
    changed = list(sequences)
    ids = [(t * 7 + 11) % 40000 for t in sequences[4].input_ids]
    changed[4] = TokenizedExample(ids, [IGNORE_INDEX] * 20 + ids[20:], False)
    with torch.no_grad():
        before = per_sequence_losses(model, sequences, layout)
        after = per_sequence_losses(model, changed, layout)

    others = [i for i in range(len(LENGTHS)) if i != 4]
    assert after[4] != before[4]
    assert after[others].tolist() == pytest.approx(before[others].tolist(), abs=1e-5)


def test_models_with_sliding_windows_keep_sdpa():
    config = MistralConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        sliding_window=8,
    )
    model = MistralForCausalLM(config)

    assert not use_packed_attention(model) and model.config._attn_implementation == "sdpa"
