"""OpenAI-style hyperparameters: validation and the "auto" rules."""

import pytest
from pydantic import ValidationError
from tunery_trainer.hyperparams import BASE_LEARNING_RATE, Hyperparameters, resolve


def test_defaults_are_auto_with_our_lora_settings():
    h = Hyperparameters()

    assert (h.n_epochs, h.batch_size, h.learning_rate_multiplier, h.eval_every_steps) == ("auto",) * 4
    assert (h.lora_r, h.lora_alpha, h.lora_dropout) == (16, 32, 0.05)
    assert (h.max_seq_len, h.warmup_ratio) == (1024, 0.03)


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
            "lora_r": 8,
            "lora_alpha": 16,
            "lora_dropout": 0.0,
            "max_seq_len": 256,
            "warmup_ratio": 0.1,
            "eval_every_steps": 5,
        }
    )
    r = resolve(h, 1000)

    assert (r.n_epochs, r.batch_size, r.learning_rate, r.eval_every_steps) == (2, 4, 1e-4, 5)
    assert (r.lora_r, r.lora_alpha, r.lora_dropout, r.max_seq_len, r.warmup_ratio) == (8, 16, 0.0, 256, 0.1)


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
        {"lora_dropout": 1},
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
