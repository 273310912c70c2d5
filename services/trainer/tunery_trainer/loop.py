"""The LoRA training loop, readable top to bottom: setup → train → save.

Plain PyTorch around a PEFT-wrapped Hugging Face model, no Trainer class. It runs in a worker
thread and talks to its caller through `TrainHooks`: metrics reports, events, completed
checkpoints, and a stop request polled before every optimizer step. On CPU a run is fully
deterministic for a given seed and data, and a run resumed from a checkpoint continues exactly
as if it had not stopped.

Steps: a micro-batch is `batch_size` examples, an optimizer step `gradient_accumulation_steps`
micro-batches (the last step of an epoch may have fewer), so an epoch has
ceil(n / (batch_size × gradient_accumulation_steps)) steps.
"""

import logging
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

from tunery_trainer.data import PreferencePair, TrainingData
from tunery_trainer.hyperparams import ResolvedHyperparameters
from tunery_trainer.model_setup import load_model_for_training, training_device
from tunery_trainer.objectives import Objective, add_stats, evaluate, make_objective
from tunery_trainer.packed_attention import use_packed_attention
from tunery_trainer.packing import BatchBuilder
from tunery_trainer.train_state import (
    ADAPTER_DIR,
    Progress,
    load_checkpoint,
    load_trainable_weights,
    save_checkpoint,
    trainable_weights,
)
from tunery_trainer.validation_tracker import ValidationTracker

log = logging.getLogger(__name__)

StopRequest = Literal["cancel", "pause", "shutdown"]

MAX_VALID_EXAMPLES = 256  # the periodic validation subset; the whole set is scored at epoch ends
MAX_GRAD_NORM = 1.0


@dataclass(frozen=True)
class Checkpoint:
    step: int
    epoch: int
    path: Path  # folder: adapter/ (servable alone) + everything to resume (see train_state)
    metrics: dict  # the metrics report at that step (for a stop checkpoint: the latest report)
    reason: str  # "epoch" | "interval" | "stop"


@dataclass
class TrainHooks:
    on_metrics: Callable[[dict], None]  # one metrics report
    on_event: Callable[[str, str, str, dict], None]  # (what, level, message, data)
    on_checkpoint: Callable[[Checkpoint], None]  # a checkpoint folder is complete; returns once persisted
    stop_requested: Callable[[], StopRequest | None]  # polled before every optimizer step


@dataclass(frozen=True)
class TrainResult:
    steps: int
    trained_tokens: int  # non-padding tokens processed, over all epochs
    history: list[dict]  # every metrics report in order (restored ones included after a resume)
    best_step: int | None  # step of the published adapter (lowest valid loss); None without validation
    adapter_dir: Path | None  # the adapter to publish (best by valid loss, else the last); None when stopped
    stopped: StopRequest | None
    early_stopped: bool = False


@dataclass
class _Run:
    """The live objects of a run and how far it is."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    shuffle: torch.Generator
    objective: Objective
    progress: Progress
    best_weights: dict[str, torch.Tensor] | None = None
    last_checkpoint_step: int | None = None
    saved_checkpoints: list[Path] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)  # of this call
    steps_at_start: int = 0  # of this call
    elapsed_at_start: float = 0.0  # by earlier calls, for a resumed run
    window_seconds: float = 0.0  # training time (no validation) since the last report

    def elapsed(self) -> float:
        return self.elapsed_at_start + time.monotonic() - self.started


def train(
    model_dir: Path,
    data: TrainingData,
    hp: ResolvedHyperparameters,
    seed: int,
    work_dir: Path,
    hooks: TrainHooks,
    resume_from: Path | None = None,
    device: str | None = None,
) -> TrainResult:
    """Train a LoRA adapter on `data.train`, writing checkpoints and the result under `work_dir`.

    Reports come every `hp.eval_every_steps` steps, at each epoch end and at each checkpoint;
    checkpoints at each epoch end, every `hp.checkpoint_every_steps` steps and on a "pause" or
    "shutdown" request (unless the newest one already holds this step). A checkpoint folder is
    removed once a newer one has been handed to `on_checkpoint`. "cancel" returns at once.
    `device`: "cpu", "cuda", "cuda:<i>"; None picks the first GPU, else the CPU.
    """
    train_set, valid_set = data.train, data.valid
    if not train_set:
        raise ValueError("no training examples")
    if (hp.method == "dpo") != isinstance(train_set[0], PreferencePair):
        raise ValueError(f"the training data does not fit method {hp.method!r}")

    # --- setup ---
    device = training_device(device)
    torch.manual_seed(seed)  # LoRA init and dropout draw from the global generator
    model = load_model_for_training(model_dir, hp, device)
    pad_id = model.config.pad_token_id or 0  # any id works: padding never reaches a loss
    one_row = hp.packing and use_packed_attention(model.get_base_model())
    objective = make_objective(hp, BatchBuilder(hp.packing, pad_id, device, one_row))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=hp.learning_rate, weight_decay=0.0)
    step_size = hp.batch_size * hp.gradient_accumulation_steps
    total_steps = hp.n_epochs * math.ceil(len(train_set) / step_size)
    scheduler = _scheduler(hp, optimizer, total_steps)
    shuffle = torch.Generator().manual_seed(seed)  # its own generator: the order ignores dropout
    run = _Run(
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        shuffle=shuffle,
        objective=objective,
        progress=Progress(
            total_steps=total_steps,
            n_train=len(train_set),
            tracker=ValidationTracker(patience=hp.early_stopping_patience),
        ),
    )
    if resume_from is not None:
        _resume(run, resume_from)
    valid_subset = _bounded_subset(valid_set, seed)
    checkpoints_dir = work_dir / "checkpoints"

    # --- train ---
    progress = run.progress
    early_stopped = False
    while progress.epoch <= hp.n_epochs and not early_stopped:
        if progress.order is None:
            progress.order = torch.randperm(len(train_set), generator=shuffle).tolist()
        while progress.position < len(progress.order):
            stop = hooks.stop_requested()
            if stop is not None:
                log.info("%s requested at step %d of %d", stop, progress.step, total_steps)
                if stop != "cancel" and progress.step not in (0, run.last_checkpoint_step):
                    _checkpoint(run, checkpoints_dir, "stop", hooks)
                return _result(run, adapter_dir=None, stopped=stop)

            indices = progress.order[progress.position : progress.position + step_size]
            learning_rate = _optimizer_step(run, [train_set[i] for i in indices], hp.batch_size, trainable)
            progress.position += len(indices)

            epoch_done = progress.position >= len(progress.order)
            interval_due = bool(hp.checkpoint_every_steps) and progress.step % hp.checkpoint_every_steps == 0
            if progress.step % hp.eval_every_steps == 0 or epoch_done or interval_due:
                report = _report(run, learning_rate, valid_subset, valid_set if epoch_done else None, hp)
                hooks.on_metrics(report)
                early_stopped = _watch_validation(run, report, hooks)
            if epoch_done or interval_due:
                _checkpoint(run, checkpoints_dir, "epoch" if epoch_done else "interval", hooks)
            if early_stopped:
                break
        if not early_stopped:
            progress.epoch += 1
            progress.order, progress.position = None, 0

    # --- save ---
    if run.best_weights is not None:  # publish the adapter with the lowest validation loss
        load_trainable_weights(model, run.best_weights)
    adapter_dir = work_dir / ADAPTER_DIR
    shutil.rmtree(adapter_dir, ignore_errors=True)
    model.save_pretrained(adapter_dir)
    return _result(run, adapter_dir=adapter_dir, stopped=None, early_stopped=early_stopped)


def _scheduler(hp: ResolvedHyperparameters, optimizer: torch.optim.Optimizer, total_steps: int):
    warmup = math.ceil(hp.warmup_ratio * total_steps)
    make = get_cosine_schedule_with_warmup if hp.lr_scheduler == "cosine" else get_linear_schedule_with_warmup
    return make(optimizer, warmup, total_steps)


def _resume(run: _Run, folder: Path) -> None:
    expected = run.progress
    snapshot = load_checkpoint(folder, run.model, run.optimizer, run.scheduler, run.shuffle)
    saved = snapshot.progress
    if (saved.n_train, saved.total_steps) != (expected.n_train, expected.total_steps):
        raise ValueError(
            f"checkpoint {folder} was written for {saved.n_train} training examples and "
            f"{saved.total_steps} steps, not {expected.n_train} and {expected.total_steps}"
        )
    saved.tracker.patience = expected.tracker.patience
    run.progress, run.best_weights = saved, snapshot.best_weights
    run.last_checkpoint_step = run.steps_at_start = saved.step
    run.elapsed_at_start = saved.elapsed_s
    log.info("resumed from %s at step %d", folder, saved.step)


def _optimizer_step(run: _Run, examples: Sequence, batch_size: int, trainable: list) -> float:
    """One optimizer step over `examples`, `batch_size` at a time; returns the rate it used."""
    started = time.monotonic()
    divide_by = run.objective.normaliser(examples)
    for first in range(0, len(examples), batch_size):
        loss, stats = run.objective.loss(run.model, examples[first : first + batch_size], divide_by)
        loss.backward()
        add_stats(run.progress.window, stats)
        run.progress.trained_tokens += stats["tokens"]
    torch.nn.utils.clip_grad_norm_(trainable, MAX_GRAD_NORM)
    learning_rate = run.scheduler.get_last_lr()[0]
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.progress.step += 1
    run.window_seconds += time.monotonic() - started
    return learning_rate


def _report(
    run: _Run,
    learning_rate: float,
    valid_subset: Sequence,
    full_valid: Sequence | None,
    hp: ResolvedHyperparameters,
) -> dict:
    """The metrics report at this step; `full_valid` (epoch ends) adds the whole validation set."""
    progress = run.progress
    seconds_per_step = (time.monotonic() - run.started) / max(progress.step - run.steps_at_start, 1)
    report = {
        "step": progress.step,
        "epoch": progress.epoch,
        "total_steps": progress.total_steps,
        **run.objective.metrics(progress.window, "train"),
        "learning_rate": learning_rate,
        "tokens_per_second": progress.window.get("tokens", 0) / max(run.window_seconds, 1e-9),
        "elapsed_s": run.elapsed(),
        "eta_s": seconds_per_step * (progress.total_steps - progress.step),
        "trained_tokens": progress.trained_tokens,
    }
    if valid_subset:
        subset_stats = evaluate(run.model, run.objective, valid_subset, hp.batch_size)
        report |= run.objective.metrics(subset_stats, "valid")
        if full_valid:
            full_stats = (
                subset_stats
                if len(full_valid) == len(valid_subset)
                else evaluate(run.model, run.objective, full_valid, hp.batch_size)
            )
            report |= run.objective.metrics(full_stats, "full_valid")
    log.info("metrics %s", report)
    progress.history.append(report)
    progress.window = {}
    run.window_seconds = 0.0
    return report


def _watch_validation(run: _Run, report: dict, hooks: TrainHooks) -> bool:
    """Keep the best adapter, warn about overfitting; True when patience is exhausted."""
    if "valid_loss" not in report:
        return False
    step = report["step"]
    verdict = run.progress.tracker.observe(step, report["train_loss"], report["valid_loss"])
    if verdict.improved:
        run.best_weights = trainable_weights(run.model)
    losses = {"step": step, "train_loss": report["train_loss"], "valid_loss": report["valid_loss"]}
    if verdict.overfitting:
        hooks.on_event(
            "overfitting",
            "warning",
            f"Step {step}: validation loss rose over the last two evaluations while training loss "
            "fell; the model may be overfitting (the adapter with the lowest validation loss is kept)",
            losses | {"best_step": run.progress.tracker.best_step},
        )
    if verdict.stop:
        tracker = run.progress.tracker
        hooks.on_event(
            "early_stopped",
            "info",
            f"Step {step}: no lower validation loss in {tracker.evaluations_since_best} evaluations; "
            f"stopping early with the adapter of step {tracker.best_step}",
            losses | {"best_step": tracker.best_step, "best_valid_loss": tracker.best_loss},
        )
    return verdict.stop


def _checkpoint(run: _Run, checkpoints_dir: Path, reason: str, hooks: TrainHooks) -> None:
    progress = run.progress
    progress.elapsed_s = run.elapsed()
    folder = checkpoints_dir / f"step-{progress.step}"
    save_checkpoint(folder, run.model, run.optimizer, run.scheduler, run.shuffle, progress, run.best_weights)
    metrics = progress.history[-1] if progress.history else {}
    hooks.on_checkpoint(Checkpoint(progress.step, progress.epoch, folder, metrics, reason))
    run.last_checkpoint_step = progress.step
    for older in run.saved_checkpoints:  # persisted by the hook: the newest is enough to resume
        shutil.rmtree(older, ignore_errors=True)
    run.saved_checkpoints = [folder]


def _bounded_subset(examples: Sequence, seed: int) -> list:
    if len(examples) <= MAX_VALID_EXAMPLES:
        return list(examples)
    picked = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed))[:MAX_VALID_EXAMPLES]
    return [examples[i] for i in sorted(picked.tolist())]


def _result(run: _Run, adapter_dir: Path | None, stopped: StopRequest | None, early_stopped=False):
    progress = run.progress
    return TrainResult(
        steps=progress.step,
        trained_tokens=progress.trained_tokens,
        history=list(progress.history),
        best_step=progress.tracker.best_step,
        adapter_dir=adapter_dir,
        stopped=stopped,
        early_stopped=early_stopped,
    )
