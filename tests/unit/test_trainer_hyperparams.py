"""OpenAI-style hyperparameters: validation and the "auto" rules."""

import pytest
from pydantic import ValidationError
from tunery_trainer.hyperparams import (
    ALL_LINEAR,
    BASE_LEARNING_RATE,
    DpoHyperparameters,
    Hyperparameters,
    resolve,
)


def test_defaults_are_auto_with_our_lora_settings():
    h = Hyperparameters()

    assert (h.n_epochs, h.batch_size, h.learning_rate_multiplier, h.eval_every_steps) == ("auto",) * 4
    assert (h.lora.r, h.lora.alpha, h.lora.dropout) == (16, 32, 0.05)
    assert tuple(h.lora.target_modules) == ALL_LINEAR
    assert (h.max_seq_len, h.warmup_ratio, h.packing, h.lr_scheduler) == (1024, 0.03, True, "linear")
    assert (h.quantization, h.gradient_accumulation_steps, h.gradient_checkpointing) == ("none", 1, False)
    assert h.early_stopping_patience is None and h.checkpoint_every_steps is None


@pytest.mark.parametrize(
    ("n", "epochs"),
    [(1, 25), (4, 25), (10, 10), (20, 5), (33, 4), (34, 3), (1000, 3), (8333, 3), (8334, 2), (30000, 1)],
)
def test_auto_epochs_follow_openai(n, epochs):
    assert resolve(Hyperparameters(), n).n_epochs == epochs


@pytest.mark.parametrize(("n", "batch_size"), [(1, 1), (16, 1), (64, 2), (100, 3), (256, 8), (100_000, 8)])
def test_auto_batch_size_keeps_about_32_steps_per_epoch_up_to_8(n, batch_size):
    assert resolve(Hyperparameters(), n).batch_size == batch_size


def test_learning_rate_is_the_base_rate_times_the_multiplier():
    assert resolve(Hyperparameters(), 10).learning_rate == BASE_LEARNING_RATE == 2e-4
    assert resolve(Hyperparameters(learning_rate_multiplier=2.5), 10).learning_rate == pytest.approx(5e-4)


def test_auto_eval_interval_gives_about_ten_reports():
    # 100 examples: 3 epochs of ceil(100 / 3) = 34 steps = 102 steps
    assert resolve(Hyperparameters(), 100).eval_every_steps == 10
    assert resolve(Hyperparameters(n_epochs=1, batch_size=8), 8).eval_every_steps == 1


def test_explicit_values_are_kept():
    h = Hyperparameters.model_validate(
        {
            "n_epochs": 2,
            "batch_size": 4,
            "learning_rate_multiplier": 0.5,
            "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
            "max_seq_len": 256,
            "warmup_ratio": 0.1,
            "eval_every_steps": 5,
        }
    )
    r = resolve(h, 1000)

    assert (r.n_epochs, r.batch_size, r.learning_rate, r.eval_every_steps) == (2, 4, 1e-4, 5)
    assert (r.lora_r, r.lora_alpha, r.lora_dropout, r.max_seq_len, r.warmup_ratio) == (8, 16, 0.0, 256, 0.1)
    assert r.target_modules == ("q_proj", "v_proj") and r.method == "supervised"


@pytest.mark.parametrize(
    "bad",
    [
        {"n_epochs": 0},
        {"n_epochs": 51},
        {"n_epochs": "many"},
        {"batch_size": 257},
        {"learning_rate_multiplier": 0},
        {"learning_rate_multiplier": 101},
        {"warmup_ratio": 0.6},
        {"lora": {"dropout": 1}},
        {"lora": {"target_modules": []}},
        {"lr_scheduler": "constant"},
        {"quantization": "8bit"},
        {"gradient_accumulation_steps": 0},
        {"early_stopping_patience": 0},
        {"max_seq_len": 8},
        {"eval_every_steps": 0},
    ],
)
def test_out_of_range_values_are_rejected_naming_the_field(bad):
    with pytest.raises(ValidationError) as info:
        Hyperparameters.model_validate(bad)
    [field] = bad
    assert all(error["loc"][0] == field for error in info.value.errors())


def test_an_unknown_key_is_an_error_naming_it():
    with pytest.raises(ValidationError) as info:
        Hyperparameters.model_validate({"n_epochs": 3, "learning_rate": 0.1})

    [error] = info.value.errors()
    assert error["loc"] == ("learning_rate",)
    assert "learning_rate" in str(info.value)


def test_resolving_needs_training_examples():
    with pytest.raises(ValueError, match="no training examples"):
        resolve(Hyperparameters(), 0)


def test_gradient_accumulation_makes_fewer_optimizer_steps():
    # 100 examples, 4 per micro-batch, 2 micro-batches per step: ceil(100 / 8) = 13 steps an epoch
    r = resolve(Hyperparameters(n_epochs=2, batch_size=4, gradient_accumulation_steps=2), 100)

    assert r.eval_every_steps == 2  # 26 steps in all, about ten reports


def test_dpo_hyperparameters_add_beta():
    assert resolve(DpoHyperparameters(), 10).beta == 0.1
    r = resolve(DpoHyperparameters(beta=0.5), 10)
    assert (r.method, r.beta) == ("dpo", 0.5)
    with pytest.raises(ValidationError):
        Hyperparameters.model_validate({"beta": 0.5})  # supervised training has no beta
