"""Checkpoints of the training loop and exact resumption from them, on the tiny random Llama."""

import json

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from trainer_helpers import Recorder, colour_chat, hyperparameters, jsonl, one_torch_thread
from transformers import AutoModelForCausalLM
from tunery_common.basemodels import ensure_base_model
from tunery_trainer.data import prepare_training_data
from tunery_trainer.hyperparams import Hyperparameters
from tunery_trainer.loop import train

TIMING_KEYS = {"tokens_per_second", "elapsed_s", "eta_s"}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def model_dir(model_cache):
    return ensure_base_model("tiny-random-llama", model_cache)


@pytest.fixture(scope="module")
def colours(model_dir):
    rows = [colour_chat(i) for i in range(16)]
    return prepare_training_data(model_dir, jsonl(rows), jsonl(rows[:4]), Hyperparameters(max_seq_len=64))


def resumable_hp():
    # Dropout on and two micro-batches a step: RNG, accumulation and data position all matter.
    return hyperparameters(16, n_epochs=2, batch_size=2, gradient_accumulation_steps=2, eval_every_steps=1)


def without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in report.items() if k not in TIMING_KEYS} for report in history]


@pytest.fixture(scope="module")
def uninterrupted(model_dir, colours, tmp_path_factory):
    return train(model_dir, colours, resumable_hp(), 3, tmp_path_factory.mktemp("whole"), Recorder().hooks())


@pytest.mark.parametrize(
    ("stop", "stop_before_step", "resume_step"),
    [
        ("pause", 3, 2),  # mid-epoch: a stop checkpoint at step 2
        ("shutdown", 5, 4),  # right after epoch 1: its epoch checkpoint is the one to resume from
    ],
)
def test_a_resumed_run_continues_exactly(
    model_dir, colours, uninterrupted, tmp_path, stop, stop_before_step, resume_step
):
    first = Recorder(kept=tmp_path / "kept", stop=stop, stop_before_step=stop_before_step)
    stopped = train(model_dir, colours, resumable_hp(), 3, tmp_path / "first", first.hooks())

    assert stopped.stopped == stop and stopped.steps == resume_step and stopped.adapter_dir is None
    assert first.checkpoints[-1].step == resume_step
    assert [c.reason for c in first.checkpoints] == (["stop"] if resume_step == 2 else ["epoch"])

    second = Recorder()
    resumed = train(
        model_dir,
        colours,
        resumable_hp(),
        3,
        tmp_path / "second",
        second.hooks(),
        resume_from=tmp_path / "kept" / f"step-{resume_step}",
    )

    assert resumed.steps == uninterrupted.steps == 8 and resumed.stopped is None
    assert [r["step"] for r in second.metrics] == list(range(resume_step + 1, 9))  # reports of this call
    assert without_timing(resumed.history) == without_timing(uninterrupted.history)  # bit for bit
    assert resumed.history[-1]["elapsed_s"] >= stopped.history[-1]["elapsed_s"]
    assert resumed.trained_tokens == uninterrupted.trained_tokens
    assert resumed.best_step == uninterrupted.best_step
    published = load_file(resumed.adapter_dir / "adapter_model.safetensors")
    expected = load_file(uninterrupted.adapter_dir / "adapter_model.safetensors")
    assert published.keys() == expected.keys()
    assert all(torch.equal(published[name], expected[name]) for name in expected)


def test_checkpoints_come_at_epoch_ends_and_intervals_and_hold_only_the_adapter_state(
    model_dir, colours, tmp_path
):
    recorder = Recorder(kept=tmp_path / "kept")
    hp = hyperparameters(16, n_epochs=2, eval_every_steps=4, checkpoint_every_steps=3)
    result = train(model_dir, colours, hp, 0, tmp_path / "run", recorder.hooks())

    # 4 steps an epoch: intervals at 3 and 6, epoch ends at 4 and 8
    assert [(c.step, c.epoch, c.reason) for c in recorder.checkpoints] == [
        (3, 1, "interval"),
        (4, 1, "epoch"),
        (6, 2, "interval"),
        (8, 2, "epoch"),
    ]
    reports = {r["step"]: r for r in result.history}
    assert [r["step"] for r in result.history] == [3, 4, 6, 8]  # checkpoints get a report of their own
    assert all(c.metrics == reports[c.step] for c in recorder.checkpoints)
    # once handed over, older folders go: the newest is enough to resume
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["step-8"]

    folder = tmp_path / "kept" / "step-6"
    assert sorted(p.name for p in folder.iterdir()) == [
        "adapter",
        "best_adapter.safetensors",
        "progress.json",
        "training_state.pt",
    ]
    adapter = load_file(folder / "adapter" / "adapter_model.safetensors")
    state = torch.load(folder / "training_state.pt", weights_only=True)
    assert len(state["optimizer"]["state"]) == len(adapter)  # moments of the LoRA tensors only
    checkpoint_bytes = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert checkpoint_bytes < (model_dir / "model.safetensors").stat().st_size / 4  # never the base model
    progress = json.loads((folder / "progress.json").read_text())["progress"]
    assert (progress["step"], progress["epoch"], progress["position"]) == (6, 2, 8)

    # a checkpoint's adapter is servable alone and is the model of its step
    served = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), folder / "adapter")
    served.eval()
    with torch.no_grad():
        loss = sum(
            served(input_ids=torch.tensor([e.input_ids]), labels=torch.tensor([e.labels])).loss.item()
            * sum(label != -100 for label in e.labels[1:])
            for e in colours.valid
        ) / sum(sum(label != -100 for label in e.labels[1:]) for e in colours.valid)
    assert loss == pytest.approx(reports[6]["valid_loss"], abs=1e-4)


def test_a_pause_before_the_first_step_or_right_after_a_checkpoint_writes_none(model_dir, colours, tmp_path):
    at_start = Recorder(stop="pause", stop_before_step=1)
    result = train(model_dir, colours, hyperparameters(16), 0, tmp_path / "a", at_start.hooks())
    assert result.stopped == "pause" and result.steps == 0 and at_start.checkpoints == []

    after_epoch = Recorder(stop="pause", stop_before_step=5)
    result = train(model_dir, colours, hyperparameters(16), 0, tmp_path / "b", after_epoch.hooks())
    assert result.stopped == "pause" and result.steps == 4
    assert [(c.step, c.reason) for c in after_epoch.checkpoints] == [(4, "epoch")]


def test_resuming_with_other_data_is_refused(model_dir, colours, tmp_path):
    recorder = Recorder(kept=tmp_path / "kept", stop="pause", stop_before_step=2)
    train(model_dir, colours, hyperparameters(16), 0, tmp_path / "a", recorder.hooks())
    fewer = type(colours)(train=colours.train[:12], valid=colours.valid, n_truncated=0, n_skipped=0)

    with pytest.raises(ValueError, match="written for 16 training examples"):
        train(
            model_dir,
            fewer,
            hyperparameters(12),
            0,
            tmp_path / "b",
            Recorder().hooks(),
            resume_from=tmp_path / "kept" / "step-1",
        )
