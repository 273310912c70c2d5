"""What the training-loop tests share: small data sets, hyperparameters, recording hooks."""

import json
import shutil
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from tunery_trainer.hyperparams import DpoHyperparameters, Hyperparameters, ResolvedHyperparameters, resolve
from tunery_trainer.loop import Checkpoint, StopRequest, TrainHooks

COLOURS = ["red", "green", "blue", "black"]


@contextmanager
def one_torch_thread():
    """One intra-op thread: two threads fighting other processes on a loaded 2-core machine spin
    on every small op; a single one is several times faster there and computes the same."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def learnable_tiny_model(tiny_dir: Path, out: Path) -> Path:
    """A copy of tiny-random-llama that can memorise, for tests that need a model to overfit.

    The original's logits hardly move: its tied embeddings (std 0.02) follow a unit-RMS norm, so
    logits span about ±1 over 49k tokens, and the `<|im_end|>` row is zero (padding_idx at init),
    its logit pinned at 0. Here that row is random like the others and the final norm ×20.
    """
    if (out / "config.json").exists():
        return out
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    end_of_turn = model.config.pad_token_id
    with torch.no_grad():
        embeddings = model.get_input_embeddings().weight
        embeddings[end_of_turn] = (
            torch.randn(embeddings.shape[1], generator=torch.Generator().manual_seed(0)) * 0.02
        )
        model.model.norm.weight.mul_(20)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_dir).save_pretrained(out)
    return out


def colour_chat(i: int) -> dict:
    """Example i of a fixed number → colour mapping."""
    return {
        "messages": [
            {"role": "system", "content": "Answer with a colour."},
            {"role": "user", "content": f"Colour number {i % 4}?"},
            {"role": "assistant", "content": COLOURS[i % 4]},
        ]
    }


def colour_preference(i: int) -> dict:
    """Pair i: a colour is preferred to a refusal."""
    return {
        "input": {"messages": [{"role": "user", "content": f"Colour number {i % 4}?"}]},
        "preferred_output": [{"role": "assistant", "content": COLOURS[i % 4]}],
        "non_preferred_output": [{"role": "assistant", "content": "I will not say."}],
    }


def jsonl(rows: list) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def hyperparameters(n_examples: int, dpo: bool = False, **overrides) -> ResolvedHyperparameters:
    # A high learning rate: the tiny model must move visibly within a few steps.
    settings = {
        "n_epochs": 6,
        "batch_size": 4,
        "learning_rate_multiplier": 25,
        "warmup_ratio": 0.1,
        "eval_every_steps": 3,
        "lora": {"r": 8},
    }
    model = DpoHyperparameters if dpo else Hyperparameters
    return resolve(model(**settings | overrides), n_examples)


class Recorder:
    """TrainHooks that record everything; `stop_before_step` makes a stop request before that step.

    Checkpoints are copied to `kept/step-<N>` as a worker would persist them.
    """

    def __init__(self, kept: Path | None = None, stop: StopRequest | None = None, stop_before_step: int = 0):
        self.metrics: list[dict] = []
        self.events: list[tuple[str, str, str, dict]] = []
        self.checkpoints: list[Checkpoint] = []
        self.kept = kept
        self.stop, self.stop_before_step = stop, stop_before_step
        self.polls = 0

    def hooks(self) -> TrainHooks:
        return TrainHooks(
            on_metrics=self.metrics.append,
            on_event=lambda *event: self.events.append(event),
            on_checkpoint=self._checkpoint,
            stop_requested=self._stop_requested,
        )

    def _checkpoint(self, checkpoint: Checkpoint) -> None:
        assert (checkpoint.path / "progress.json").exists()  # complete when announced
        self.checkpoints.append(checkpoint)
        if self.kept is not None:
            shutil.copytree(checkpoint.path, self.kept / checkpoint.path.name)

    def _stop_requested(self) -> StopRequest | None:
        self.polls += 1  # poll n comes before step n
        if self.stop is not None and self.polls >= self.stop_before_step:
            return self.stop
        return None
