"""The LoRA training loop on the tiny random Llama: learning, metrics, determinism, saving, stopping."""

import json

import pytest
import torch
from peft import PeftModel
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer
from tunery_common.basemodels import ensure_base_model
from tunery_trainer.data import IGNORE_INDEX, tokenize_example
from tunery_trainer.hyperparams import Hyperparameters, ResolvedHyperparameters, resolve
from tunery_trainer.loop import LORA_TARGET_MODULES, train_lora

COLOURS = ["red", "green", "blue", "black"]
METRIC_KEYS = {
    "step",
    "epoch",
    "total_steps",
    "train_loss",
    "train_mean_token_accuracy",
    "valid_loss",
    "valid_mean_token_accuracy",
    "learning_rate",
    "tokens_per_second",
    "elapsed_s",
    "eta_s",
}


@pytest.fixture(scope="module")
def model_dir(model_cache):
    return ensure_base_model("tiny-random-llama", model_cache)


@pytest.fixture(scope="module")
def examples(model_dir):
    """16 examples of a fixed number → colour mapping."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return [
        tokenize_example(
            tokenizer,
            [
                {"role": "system", "content": "Answer with a colour."},
                {"role": "user", "content": f"Colour number {i % 4}?"},
                {"role": "assistant", "content": COLOURS[i % 4]},
            ],
            max_seq_len=64,
        )
        for i in range(16)
    ]


def hyperparameters(n_examples: int, **overrides) -> ResolvedHyperparameters:
    # A high learning rate: the tiny model must move visibly within a few steps.
    settings = {
        "n_epochs": 6,
        "batch_size": 4,
        "learning_rate_multiplier": 25,
        "warmup_ratio": 0.1,
        "eval_every_steps": 3,
        "lora_r": 8,
    }
    return resolve(Hyperparameters(**settings | overrides), n_examples)


@pytest.fixture(scope="module")
def trained(model_dir, examples, tmp_path_factory):
    reports = []
    result = train_lora(
        model_dir,
        examples,
        examples[:4],  # the four distinct training examples: shows what was learnt
        hyperparameters(len(examples)),
        seed=0,
        out_dir=tmp_path_factory.mktemp("run") / "adapter",
        on_metrics=reports.append,
        should_stop=lambda: False,
    )
    return result, reports


def mean_loss(model, examples) -> float:
    """Mean cross-entropy over all label tokens, computed by Hugging Face's own loss."""
    model.eval()
    total = tokens = 0.0
    with torch.no_grad():
        for example in examples:
            labels = torch.tensor([example.labels])
            n = int((labels[:, 1:] != IGNORE_INDEX).sum())
            total += model(input_ids=torch.tensor([example.input_ids]), labels=labels).loss.item() * n
            tokens += n
    return total / tokens


def test_training_lowers_the_loss(trained):
    result, reports = trained

    assert reports[-1]["train_loss"] < reports[0]["train_loss"] - 0.15
    assert reports[-1]["valid_loss"] < reports[0]["valid_loss"]
    assert result.final_train_loss == reports[-1]["train_loss"]
    assert result.final_valid_loss == reports[-1]["valid_loss"]


def test_metrics_come_every_n_steps_and_at_each_epoch_end(trained, examples):
    result, reports = trained

    # 4 steps per epoch, 24 in all; a report every 3 steps and at every 4th
    assert [r["step"] for r in reports] == [3, 4, 6, 8, 9, 12, 15, 16, 18, 20, 21, 24]
    assert [r["epoch"] for r in reports] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6]
    assert all(set(r) == METRIC_KEYS and r["total_steps"] == 24 for r in reports)
    assert all(
        0 <= r[k] <= 1 for r in reports for k in ("train_mean_token_accuracy", "valid_mean_token_accuracy")
    )
    assert all(r["tokens_per_second"] > 0 for r in reports)
    elapsed = [r["elapsed_s"] for r in reports]
    assert elapsed == sorted(elapsed) and reports[-1]["eta_s"] == 0
    # 3 warm-up steps (0, 1/3, 2/3 of the peak), then a linear decay from the peak
    rates = [r["learning_rate"] for r in reports]
    assert rates[:2] == pytest.approx([2 / 3 * 25 * 2e-4, 25 * 2e-4])
    assert rates[1:] == sorted(rates[1:], reverse=True) and rates[-1] > 0
    assert result.steps == 24 and not result.stopped
    assert result.trained_tokens == 6 * sum(len(e.input_ids) for e in examples)


def test_the_saved_adapter_is_plain_lora_and_holds_what_was_learnt(trained, model_dir, examples):
    result, _ = trained
    config = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    with safe_open(result.adapter_dir / "adapter_model.safetensors", "pt") as weights:
        names = list(weights.keys())

    assert set(config["target_modules"]) == set(LORA_TARGET_MODULES)
    assert config["modules_to_save"] is None and config["r"] == 8
    assert names and all("lora_A" in name or "lora_B" in name for name in names)
    assert {name.split(".")[-3] for name in names} == set(LORA_TARGET_MODULES)

    base_loss = mean_loss(AutoModelForCausalLM.from_pretrained(model_dir), examples[:4])
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), result.adapter_dir)
    adapted_loss = mean_loss(adapted, examples[:4])
    assert adapted_loss == pytest.approx(result.final_valid_loss, abs=1e-4)  # our loss is HF's loss
    assert adapted_loss < base_loss - 0.25


def run_losses(model_dir, examples, seed, out_dir) -> list[dict]:
    reports = []
    train_lora(
        model_dir,
        examples[:8],
        [],
        hyperparameters(8, n_epochs=2, eval_every_steps=1),
        seed=seed,
        out_dir=out_dir,
        on_metrics=reports.append,
        should_stop=lambda: False,
    )
    assert all("valid_loss" not in r for r in reports)
    return [(r["train_loss"], r["train_mean_token_accuracy"]) for r in reports]


def test_the_same_seed_gives_the_same_run(model_dir, examples, tmp_path):
    first = run_losses(model_dir, examples, 7, tmp_path / "a")
    second = run_losses(model_dir, examples, 7, tmp_path / "b")
    other_seed = run_losses(model_dir, examples, 8, tmp_path / "c")

    assert len(first) == 4
    assert first == second
    assert other_seed != first


def test_should_stop_ends_the_run_without_an_adapter(model_dir, examples, tmp_path):
    polls = []

    def should_stop() -> bool:
        polls.append(None)
        return len(polls) > 2

    reports = []
    result = train_lora(
        model_dir,
        examples,
        [],
        hyperparameters(len(examples), eval_every_steps=1),
        seed=0,
        out_dir=tmp_path / "adapter",
        on_metrics=reports.append,
        should_stop=should_stop,
    )

    assert result.stopped and result.steps == 2 and result.adapter_dir is None
    assert result.final_train_loss == reports[-1]["train_loss"] and result.final_valid_loss is None
    assert not (tmp_path / "adapter").exists()


def test_training_needs_examples(model_dir, tmp_path):
    with pytest.raises(ValueError, match="no training examples"):
        train_lora(model_dir, [], [], hyperparameters(1), 0, tmp_path, print, lambda: False)
