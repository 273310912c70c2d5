"""DPO on the tiny random Llama: preference data, the loss against the adapter-free reference."""

import math

import pytest
import torch
from trainer_helpers import Recorder, colour_preference, hyperparameters, jsonl, one_torch_thread
from transformers import AutoTokenizer
from tunery_common.basemodels import ensure_base_model
from tunery_trainer.data import IGNORE_INDEX, PreferencePair, prepare_training_data
from tunery_trainer.dpo import dpo_loss
from tunery_trainer.hyperparams import DpoHyperparameters
from tunery_trainer.loop import train

DPO_KEYS = {
    "step",
    "epoch",
    "total_steps",
    "train_loss",
    "train_reward_accuracy",
    "train_reward_margin",
    "valid_loss",
    "valid_reward_accuracy",
    "valid_reward_margin",
    "learning_rate",
    "tokens_per_second",
    "elapsed_s",
    "eta_s",
    "trained_tokens",
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def model_dir(model_cache):
    return ensure_base_model("tiny-random-llama", model_cache)


@pytest.fixture(scope="module")
def pairs(model_dir):
    rows = [colour_preference(i) for i in range(8)]
    return prepare_training_data(model_dir, jsonl(rows), jsonl(rows[:4]), DpoHyperparameters(max_seq_len=64))


def trained_text(tokenizer, example) -> str:
    return tokenizer.decode(
        [t for t, label in zip(example.input_ids, example.labels, strict=True) if label != IGNORE_INDEX]
    )


def test_preference_rows_become_pairs_trained_on_their_answers_only(model_dir):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    row = {
        "input": {
            "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"},  # context, even with a weight
                {"role": "user", "content": "Colour?"},
            ]
        },
        "preferred_output": [{"role": "assistant", "content": "Blue."}],
        "non_preferred_output": [{"role": "assistant", "content": "No idea."}],
    }
    data = prepare_training_data(model_dir, jsonl([row]), None, DpoHyperparameters())
    [pair] = data.train

    assert isinstance(pair, PreferencePair)
    assert trained_text(tokenizer, pair.chosen) == "Blue.<|im_end|>"
    assert trained_text(tokenizer, pair.rejected) == "No idea.<|im_end|>"
    prompt_length = next(i for i, label in enumerate(pair.chosen.labels) if label != IGNORE_INDEX)
    assert pair.chosen.input_ids[:prompt_length] == pair.rejected.input_ids[:prompt_length]
    assert tokenizer.decode(pair.chosen.input_ids[:prompt_length]).endswith("<|im_start|>assistant\n")
    assert "Hello!" in tokenizer.decode(pair.chosen.input_ids)


def test_the_dpo_loss_prefers_a_larger_chosen_margin():
    same = dpo_loss(
        torch.tensor([-5.0]), torch.tensor([-7.0]), torch.tensor([-5.0]), torch.tensor([-7.0]), 0.1
    )
    better = dpo_loss(
        torch.tensor([-4.0]), torch.tensor([-8.0]), torch.tensor([-5.0]), torch.tensor([-7.0]), 0.1
    )

    assert same[0].item() == pytest.approx(math.log(2))
    assert better[0].item() == pytest.approx(-math.log(1 / (1 + math.exp(-0.1 * 2))))  # margin β·(1 + 1)
    assert (better[1].item(), better[2].item()) == pytest.approx((0.1, -0.1))


@pytest.fixture(scope="module")
def dpo_run(model_dir, pairs, tmp_path_factory):
    recorder = Recorder()
    hp = hyperparameters(8, dpo=True, n_epochs=4, batch_size=4, eval_every_steps=1, beta=0.5)
    return train(model_dir, pairs, hp, 0, tmp_path_factory.mktemp("dpo"), recorder.hooks()), recorder


def test_the_loss_starts_at_log_2_because_policy_and_reference_coincide(dpo_run):
    first = dpo_run[0].history[0]

    # the first step's statistics come from the adapter before any update: B = 0, policy = reference
    assert first["train_loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert first["train_reward_margin"] == 0 and first["train_reward_accuracy"] == 0


def test_training_widens_the_margin_between_chosen_and_rejected(dpo_run):
    result, recorder = dpo_run
    history = result.history

    assert result.steps == 8 and all(set(r) >= DPO_KEYS for r in history)
    assert {"full_valid_loss", "full_valid_reward_accuracy", "full_valid_reward_margin"} <= set(history[1])
    margins = [r["valid_reward_margin"] for r in history]
    assert margins == sorted(margins) and margins[-1] > 1  # wider after every step
    assert history[-1]["valid_loss"] < history[1]["valid_loss"] < math.log(2)
    assert history[-1]["valid_reward_accuracy"] == 1
    assert result.best_step is not None and (result.adapter_dir / "adapter_config.json").exists()


def test_preference_pairs_need_a_dpo_run(model_dir, pairs, tmp_path):
    with pytest.raises(ValueError, match="does not fit method 'supervised'"):
        train(model_dir, pairs, hyperparameters(8), 0, tmp_path, Recorder().hooks())
