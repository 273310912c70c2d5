"""Packed micro-batches on the tiny random Llama: no token sees another sequence."""

import random

import pytest
import torch
from peft import LoraConfig, get_peft_model
from trainer_helpers import one_torch_thread
from transformers import AutoModelForCausalLM
from tunery_common.basemodels import ensure_base_model
from tunery_trainer.data import IGNORE_INDEX, TokenizedExample
from tunery_trainer.hyperparams import ALL_LINEAR
from tunery_trainer.label_scores import score_labels
from tunery_trainer.packing import first_fit_decreasing, make_batch

LENGTHS = [30, 7, 55, 12, 40, 3, 25, 18]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def model(model_cache):
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(ensure_base_model("tiny-random-llama", model_cache))
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


def per_sequence_losses(model, sequences, packing: bool) -> torch.Tensor:
    return score_labels(model, make_batch(sequences, packing, pad_id=2)).per_sequence(len(sequences))


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


def test_packed_sequences_score_as_if_each_ran_alone(model, sequences):
    with torch.no_grad():
        packed = per_sequence_losses(model, sequences, packing=True)
        padded = per_sequence_losses(model, sequences, packing=False)
        alone = torch.cat([per_sequence_losses(model, [s], packing=True) for s in sequences])

    assert packed.tolist() == pytest.approx(alone.tolist(), abs=1e-5, rel=1e-6)
    assert padded.tolist() == pytest.approx(alone.tolist(), abs=1e-5, rel=1e-6)
    assert (alone < 0).all()  # log-probabilities of real labels: the comparison is not of zeros


def test_packed_gradients_equal_those_of_separate_runs(model, sequences):
    def lora_grads(batches) -> torch.Tensor:
        model.zero_grad()
        for batch in batches:
            (-score_labels(model, batch).logprobs.sum()).backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])
        model.zero_grad()
        return grads

    packed = lora_grads([make_batch(sequences, True, 2)])
    separate = lora_grads([make_batch([s], True, 2) for s in sequences])

    assert packed.abs().max() > 0
    torch.testing.assert_close(packed, separate, atol=1e-5, rtol=1e-4)


def test_a_sequence_changed_elsewhere_in_the_row_does_not_change_its_neighbours(model, sequences):
    # Row 1 holds sequences 4, 3 and 5; rewrite 4 entirely: 3 and 5 must score the same.
    changed = list(sequences)
    ids = [(t * 7 + 11) % 40000 for t in sequences[4].input_ids]
    changed[4] = TokenizedExample(ids, [IGNORE_INDEX] * 20 + ids[20:], False)
    with torch.no_grad():
        before = per_sequence_losses(model, sequences, packing=True)
        after = per_sequence_losses(model, changed, packing=True)

    assert after[4] != before[4]
    assert after[[3, 5]].tolist() == pytest.approx(before[[3, 5]].tolist(), abs=1e-5)
