"""The LoRA training loop on the tiny random Llama: learning, metrics, schedules, accumulation,
packing, gradient checkpointing, 4-bit, determinism and stopping."""

import json
import math

import pytest
import torch
from peft import PeftModel
from safetensors import safe_open
from trainer_helpers import Recorder, colour_chat, hyperparameters, jsonl, one_torch_thread
from transformers import AutoModelForCausalLM
from tunery_common.basemodels import ensure_base_model
from tunery_trainer.data import IGNORE_INDEX, prepare_training_data
from tunery_trainer.hyperparams import ALL_LINEAR, Hyperparameters
from tunery_trainer.loop import train
from tunery_trainer.model_setup import compute_dtype

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
    "trained_tokens",
}
FULL_VALID_KEYS = {"full_valid_loss", "full_valid_mean_token_accuracy"}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def model_dir(model_cache):
    return ensure_base_model("tiny-random-llama", model_cache)


@pytest.fixture(scope="module")
def colours(model_dir):
    """16 colour examples; validation: the four distinct ones (shows what was learnt)."""
    rows = [colour_chat(i) for i in range(16)]
    return prepare_training_data(model_dir, jsonl(rows), jsonl(rows[:4]), Hyperparameters(max_seq_len=64))


@pytest.fixture(scope="module")
def varied(model_dir):
    """12 examples whose answers differ in length (1 to 12 words): per-batch means would differ
    from a mean over the step's tokens."""
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"Count to {i + 1} in words."},
                {
                    "role": "assistant",
                    "content": " ".join(["one", "two", "three", "four"] * 3)[: 6 * (i + 1)],
                },
            ]
        }
        for i in range(12)
    ]
    return prepare_training_data(model_dir, jsonl(rows), None, Hyperparameters(max_seq_len=64))


@pytest.fixture(scope="module")
def trained(model_dir, colours, tmp_path_factory):
    recorder = Recorder()
    result = train(
        model_dir, colours, hyperparameters(16), 0, tmp_path_factory.mktemp("run"), recorder.hooks()
    )
    return result, recorder


def losses(result) -> list[float]:
    return [r["train_loss"] for r in result.history]


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
    result, recorder = trained

    assert recorder.metrics[-1]["train_loss"] < recorder.metrics[0]["train_loss"] - 0.15
    assert recorder.metrics[-1]["valid_loss"] < recorder.metrics[0]["valid_loss"]
    assert result.history == recorder.metrics


def test_metrics_come_every_n_steps_and_at_each_epoch_end(trained, colours):
    result, recorder = trained
    reports = recorder.metrics

    # 4 steps per epoch, 24 in all; a report every 3 steps and at every 4th
    assert [r["step"] for r in reports] == [3, 4, 6, 8, 9, 12, 15, 16, 18, 20, 21, 24]
    assert [r["epoch"] for r in reports] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6]
    for report in reports:
        epoch_end = report["step"] % 4 == 0
        assert set(report) == METRIC_KEYS | (FULL_VALID_KEYS if epoch_end else set())
        assert report["total_steps"] == 24
        assert 0 <= report["train_mean_token_accuracy"] <= 1 and 0 <= report["valid_mean_token_accuracy"] <= 1
        assert report["tokens_per_second"] > 0
        if epoch_end:  # the validation set is small: the subset is all of it
            assert report["full_valid_loss"] == report["valid_loss"]
    elapsed = [r["elapsed_s"] for r in reports]
    assert elapsed == sorted(elapsed) and reports[-1]["eta_s"] == 0
    tokens_per_epoch = sum(len(e.input_ids) for e in colours.train)
    assert [r["trained_tokens"] for r in reports if r["step"] % 4 == 0] == [
        epoch * tokens_per_epoch for epoch in range(1, 7)
    ]
    assert result.steps == 24 and result.stopped is None and not result.early_stopped
    assert result.trained_tokens == 6 * tokens_per_epoch


def test_the_learning_rate_warms_up_then_decays_linearly(trained):
    rates = [r["learning_rate"] for r in trained[1].metrics]

    # 3 warm-up steps (0, 1/3, 2/3 of the peak; step 3 uses 2/3), then a linear decay to 0 at step 24
    peak = 25 * 2e-4
    assert rates[0] == pytest.approx(2 / 3 * peak)
    steps = [r["step"] for r in trained[1].metrics]
    assert rates[1:] == pytest.approx([peak * (24 - (s - 1)) / 21 for s in steps[1:]])


def test_the_cosine_schedule_follows_a_half_cosine_after_warm_up(model_dir, colours, tmp_path):
    hp = hyperparameters(16, n_epochs=2, eval_every_steps=1, lr_scheduler="cosine", warmup_ratio=0.25)
    result = train(model_dir, colours, hp, 0, tmp_path, Recorder().hooks())

    # 8 steps, 2 of warm-up; step s (1-based) uses the rate of s - 1 steps done
    peak = 25 * 2e-4
    expected = [0, peak / 2] + [peak * 0.5 * (1 + math.cos(math.pi * (done - 2) / 6)) for done in range(2, 8)]
    assert [r["learning_rate"] for r in result.history] == pytest.approx(expected)


def test_the_published_adapter_is_plain_lora_with_the_best_validation_loss(trained, model_dir, colours):
    result, recorder = trained
    config = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    with safe_open(result.adapter_dir / "adapter_model.safetensors", "pt") as weights:
        names = list(weights.keys())

    assert set(config["target_modules"]) == set(ALL_LINEAR)
    assert config["modules_to_save"] is None and config["r"] == 8
    assert names and all("lora_A" in name or "lora_B" in name for name in names)
    assert {name.split(".")[-3] for name in names} == set(ALL_LINEAR)

    best = min(recorder.metrics, key=lambda r: r["valid_loss"])
    assert result.best_step == best["step"]
    base_loss = mean_loss(AutoModelForCausalLM.from_pretrained(model_dir), colours.valid)
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), result.adapter_dir)
    adapted_loss = mean_loss(adapted, colours.valid)
    assert adapted_loss == pytest.approx(best["valid_loss"], abs=1e-4)  # our loss is HF's loss
    assert adapted_loss < base_loss - 0.25


def test_accumulated_micro_batches_make_the_same_step_as_one_batch(model_dir, varied, tmp_path):
    settings = {"n_epochs": 2, "eval_every_steps": 1, "lora": {"r": 8, "dropout": 0.0}}
    one_batch = train(
        model_dir,
        varied,
        hyperparameters(12, batch_size=6, **settings),
        0,
        tmp_path / "a",
        Recorder().hooks(),
    )
    accumulated = train(
        model_dir,
        varied,
        hyperparameters(12, batch_size=2, gradient_accumulation_steps=3, **settings),
        0,
        tmp_path / "b",
        Recorder().hooks(),
    )

    assert accumulated.steps == one_batch.steps == 4
    assert losses(accumulated) == pytest.approx(losses(one_batch), abs=1e-5)
    assert losses(one_batch)[-1] < losses(one_batch)[0]
    assert [r["learning_rate"] for r in accumulated.history] == [
        r["learning_rate"] for r in one_batch.history
    ]


def test_packing_and_padding_train_the_same_model(model_dir, varied, tmp_path):
    settings = {"n_epochs": 2, "eval_every_steps": 1, "lora": {"r": 8, "dropout": 0.0}}
    packed = train(model_dir, varied, hyperparameters(12, **settings), 0, tmp_path / "a", Recorder().hooks())
    padded = train(
        model_dir,
        varied,
        hyperparameters(12, packing=False, **settings),
        0,
        tmp_path / "b",
        Recorder().hooks(),
    )

    assert losses(packed) == pytest.approx(losses(padded), abs=1e-4)
    assert packed.trained_tokens == padded.trained_tokens  # padding is not counted as trained


def test_gradient_checkpointing_changes_memory_not_results(model_dir, varied, tmp_path):
    # Dropout on: recomputed activations must replay the same dropout masks.
    hp = hyperparameters(12, n_epochs=1, eval_every_steps=1)
    plain = train(model_dir, varied, hp, 0, tmp_path / "a", Recorder().hooks())
    checkpointed = train(
        model_dir,
        varied,
        hyperparameters(12, n_epochs=1, eval_every_steps=1, gradient_checkpointing=True),
        0,
        tmp_path / "b",
        Recorder().hooks(),
    )

    assert losses(checkpointed) == pytest.approx(losses(plain), abs=1e-5)


def test_4bit_quantization_trains_on_this_machine(model_dir, colours, tmp_path):
    hp = hyperparameters(16, n_epochs=3, eval_every_steps=4, quantization="4bit")
    result = train(model_dir, colours, hp, 0, tmp_path, Recorder().hooks())

    assert result.steps == 12
    assert result.history[-1]["valid_loss"] < result.history[0]["valid_loss"]
    config = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert config["r"] == 8 and set(config["target_modules"]) == set(ALL_LINEAR)


def run_losses(model_dir, colours, seed, work_dir) -> list[tuple[float, float]]:
    result = train(
        model_dir,
        colours,
        hyperparameters(16, n_epochs=1, eval_every_steps=1),
        seed,
        work_dir,
        Recorder().hooks(),
    )
    return [(r["train_loss"], r["train_mean_token_accuracy"], r["valid_loss"]) for r in result.history]


def test_the_same_seed_gives_the_same_run(model_dir, colours, tmp_path):
    first = run_losses(model_dir, colours, 7, tmp_path / "a")
    second = run_losses(model_dir, colours, 7, tmp_path / "b")
    other_seed = run_losses(model_dir, colours, 8, tmp_path / "c")

    assert len(first) == 4
    assert first == second
    assert other_seed != first


def test_cancel_ends_the_run_at_once_without_a_checkpoint_or_adapter(model_dir, colours, tmp_path):
    recorder = Recorder(stop="cancel", stop_before_step=3)
    result = train(model_dir, colours, hyperparameters(16, eval_every_steps=1), 0, tmp_path, recorder.hooks())

    assert result.stopped == "cancel" and result.steps == 2 and result.adapter_dir is None
    assert [r["step"] for r in result.history] == [1, 2] and recorder.checkpoints == []
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "adapter").exists()


def test_training_needs_examples(model_dir, colours, tmp_path):
    empty = type(colours)(train=[], valid=[], n_truncated=0, n_skipped=0)
    with pytest.raises(ValueError, match="no training examples"):
        train(model_dir, empty, hyperparameters(1), 0, tmp_path, Recorder().hooks())


def test_cpus_train_in_fp32():
    assert compute_dtype(torch.device("cpu")) == torch.float32
