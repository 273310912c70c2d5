"""What a training step optimises: next-token cross-entropy on the answers (supervised) or DPO.

An objective turns a micro-batch of examples into a loss to back-propagate and into summed
statistics (added up over steps or a validation set, turned into metrics at report time).
"""

from collections.abc import Sequence
from typing import Protocol

import torch

from tunery_trainer.data import IGNORE_INDEX, TokenizedExample
from tunery_trainer.dpo import DpoObjective
from tunery_trainer.hyperparams import ResolvedHyperparameters
from tunery_trainer.label_scores import score_labels
from tunery_trainer.packing import BatchBuilder

Stats = dict[str, float]


class Objective(Protocol):
    def normaliser(self, examples: Sequence) -> int:
        """What the summed loss of one optimizer step is divided by."""

    def loss(self, model: torch.nn.Module, examples: Sequence, divide_by: int) -> tuple[torch.Tensor, Stats]:
        """The micro-batch's share of the step loss (summed loss / `divide_by`) and its statistics."""

    def metrics(self, stats: Stats, prefix: str) -> dict[str, float]:
        """`<prefix>_loss` and the objective's other figures from summed statistics."""


class SupervisedObjective:
    """Cross-entropy over every trained token, normalised over the trained tokens of the whole
    optimizer step (so accumulated micro-batches weigh what they would in one big batch)."""

    def __init__(self, build: BatchBuilder):
        self.build = build

    def normaliser(self, examples: Sequence[TokenizedExample]) -> int:
        return sum(label != IGNORE_INDEX for example in examples for label in example.labels[1:])

    def loss(self, model, examples, divide_by):
        batch = self.build(examples)
        scores = score_labels(model, batch)
        loss_sum = -scores.logprobs.sum()
        stats = {
            "loss_sum": loss_sum.item(),
            "correct": int(scores.correct.sum()),
            "labels": scores.logprobs.numel(),
            "tokens": batch.n_tokens,
        }
        return loss_sum / divide_by, stats

    def metrics(self, stats, prefix):
        return {
            f"{prefix}_loss": stats["loss_sum"] / stats["labels"],
            f"{prefix}_mean_token_accuracy": stats["correct"] / stats["labels"],
        }


def make_objective(hp: ResolvedHyperparameters, build: BatchBuilder) -> Objective:
    if hp.method == "dpo":
        return DpoObjective(build, hp.beta)
    return SupervisedObjective(build)


@torch.no_grad()
def evaluate(model: torch.nn.Module, objective: Objective, examples: Sequence, batch_size: int) -> Stats:
    """Summed statistics over `examples`, in eval mode (no dropout)."""
    model.eval()
    total: Stats = {}
    try:
        for first in range(0, len(examples), batch_size):
            _, stats = objective.loss(model, examples[first : first + batch_size], 1)
            add_stats(total, stats)
    finally:
        model.train()
    return total


def add_stats(total: Stats, stats: Stats) -> None:
    for key, value in stats.items():
        total[key] = total.get(key, 0) + value
