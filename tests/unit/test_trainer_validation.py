"""Validation during training: the best adapter is the one published, overfitting is reported,
patience stops a run early. Overfit setting: a tiny model that can memorise, taught to always
answer "red" at a high learning rate while the validation set wants "green" for the same prompts.
"""

import pytest
import torch
from peft import PeftModel
from trainer_helpers import (
    Recorder,
    colour_chat,
    hyperparameters,
    jsonl,
    learnable_tiny_model,
    one_torch_thread,
)
from transformers import AutoModelForCausalLM
from tunery_common.basemodels import ensure_base_model
from tunery_trainer.data import IGNORE_INDEX, prepare_training_data
from tunery_trainer.hyperparams import Hyperparameters
from tunery_trainer.loop import train
from tunery_trainer.validation_tracker import ValidationTracker


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def model_dir(model_cache, tmp_path_factory):
    tiny = ensure_base_model("tiny-random-llama", model_cache)
    return learnable_tiny_model(tiny, tmp_path_factory.mktemp("learnable") / "model")


def chat(i: int, colour: str) -> dict:
    return {
        "messages": [
            {"role": "user", "content": f"Colour number {i}?"},
            {"role": "assistant", "content": colour},
        ]
    }


@pytest.fixture(scope="module")
def overfit_data(model_dir):
    train_rows = [chat(i, "red") for i in range(8)]
    valid_rows = [chat(i, "green") for i in range(4)]
    return prepare_training_data(
        model_dir, jsonl(train_rows), jsonl(valid_rows), Hyperparameters(max_seq_len=64)
    )


def overfit_hp(**overrides):
    return hyperparameters(8, n_epochs=5, eval_every_steps=1, **overrides)


def hf_valid_loss(model_dir, adapter_dir, examples) -> float:
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), adapter_dir).eval()
    total = labels = 0.0
    with torch.no_grad():
        for e in examples:
            n = sum(label != IGNORE_INDEX for label in e.labels[1:])
            total += (
                model(input_ids=torch.tensor([e.input_ids]), labels=torch.tensor([e.labels])).loss.item() * n
            )
            labels += n
    return total / labels


def first_overfitting_step(history: list[dict]) -> int | None:
    """The documented rule, applied to the reports: validation loss up twice in a row while the
    training loss ends below where it was before the rise."""
    for a, b, c in zip(history, history[1:], history[2:], strict=False):
        if a["valid_loss"] < b["valid_loss"] < c["valid_loss"] and c["train_loss"] < a["train_loss"]:
            return c["step"]
    return None


@pytest.fixture(scope="module")
def overfit_run(model_dir, overfit_data, tmp_path_factory):
    recorder = Recorder()
    result = train(
        model_dir, overfit_data, overfit_hp(), 0, tmp_path_factory.mktemp("overfit"), recorder.hooks()
    )
    return result, recorder


def test_overfitting_is_reported_once(overfit_run):
    result, recorder = overfit_run
    history = result.history
    step = first_overfitting_step(history)

    assert step is not None  # the setting does overfit
    assert history[-1]["train_loss"] < 0.1 < 5 < history[-1]["valid_loss"]
    warnings = [event for event in recorder.events if event[0] == "overfitting"]
    assert len(warnings) == 1
    what, level, message, data = warnings[0]
    assert level == "warning" and data["step"] == step and f"Step {step}" in message
    assert data["best_step"] == result.best_step


def test_the_published_adapter_is_the_one_with_the_lowest_validation_loss(
    overfit_run, model_dir, overfit_data
):
    result, _ = overfit_run
    best = min(result.history, key=lambda r: r["valid_loss"])

    assert result.best_step == best["step"] < result.steps  # not simply the last
    assert not result.early_stopped and result.steps == 10
    published = hf_valid_loss(model_dir, result.adapter_dir, overfit_data.valid)
    assert published == pytest.approx(best["valid_loss"], rel=1e-4)
    assert published < result.history[-1]["valid_loss"] - 1


def test_patience_stops_the_run_early_with_the_best_adapter(model_dir, overfit_data, overfit_run, tmp_path):
    recorder = Recorder()
    result = train(
        model_dir, overfit_data, overfit_hp(early_stopping_patience=2), 0, tmp_path, recorder.hooks()
    )
    best_step = overfit_run[0].best_step

    # the same run as without patience up to two evaluations past the best one
    assert result.early_stopped and result.stopped is None
    assert result.steps == best_step + 2 and result.best_step == best_step
    assert [r["valid_loss"] for r in result.history] == [
        r["valid_loss"] for r in overfit_run[0].history[: best_step + 2]
    ]
    [stopped] = [event for event in recorder.events if event[0] == "early_stopped"]
    assert stopped[3]["best_step"] == best_step and stopped[3]["step"] == best_step + 2
    published = hf_valid_loss(model_dir, result.adapter_dir, overfit_data.valid)
    assert published == pytest.approx(result.history[best_step - 1]["valid_loss"], rel=1e-4)


def test_without_validation_the_last_adapter_is_published(model_dir, tmp_path):
    rows = [colour_chat(i) for i in range(8)]
    data = prepare_training_data(model_dir, jsonl(rows), None, Hyperparameters(max_seq_len=64))
    recorder = Recorder(kept=tmp_path / "kept")
    result = train(model_dir, data, hyperparameters(8, n_epochs=2), 0, tmp_path / "run", recorder.hooks())

    assert result.best_step is None and all("valid_loss" not in r for r in result.history)
    last = tmp_path / "kept" / f"step-{result.steps}" / "adapter" / "adapter_model.safetensors"
    assert last.read_bytes() == (result.adapter_dir / "adapter_model.safetensors").read_bytes()


def test_the_tracker_needs_two_rises_and_a_lower_training_loss():
    tracker = ValidationTracker(patience=None)
    verdicts = [
        tracker.observe(step, train, valid)
        for step, (train, valid) in enumerate(
            [(3.0, 2.0), (2.5, 1.5), (2.4, 1.6), (2.6, 1.7), (2.0, 1.8), (1.5, 1.9), (1.0, 2.0)], start=1
        )
    ]

    assert [v.improved for v in verdicts] == [True, True, False, False, False, False, False]
    # step 4: valid rose twice but training loss (2.6) is not below step 2's (2.5); step 5: it is
    assert [v.overfitting for v in verdicts] == [False, False, False, False, True, False, False]
    assert tracker.best_step == 2 and not any(v.stop for v in verdicts)


def test_the_tracker_stops_after_patience_evaluations_without_a_new_best():
    tracker = ValidationTracker(patience=2)
    stops = [
        tracker.observe(step, 1.0, valid).stop for step, valid in enumerate([2.0, 1.9, 1.95, 1.9, 1.8], 1)
    ]

    assert stops == [False, False, False, True, False]  # an equal loss is no improvement
    restored = ValidationTracker.from_state(tracker.state_dict())
    assert restored == tracker and restored.best_step == 5
