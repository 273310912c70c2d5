"""Direct Preference Optimization: the loss and the objective that runs it.

loss = -log σ(β · ((log πθ(chosen) - log πref(chosen)) - (log πθ(rejected) - log πref(rejected))))
with log-probabilities summed over each answer's tokens. The reference policy is the same model
with its adapter disabled: no second copy of the weights.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from tunery_trainer.data import PreferencePair, TokenizedExample
from tunery_trainer.label_scores import score_labels
from tunery_trainer.packing import BatchBuilder


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair losses and the implicit rewards β·(log πθ - log πref) of both answers."""
    chosen_rewards = beta * (policy_chosen - reference_chosen)
    rejected_rewards = beta * (policy_rejected - reference_rejected)
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards)
    return losses, chosen_rewards.detach(), rejected_rewards.detach()


class DpoObjective:
    def __init__(self, build: BatchBuilder, beta: float):
        self.build = build
        self.beta = beta

    def _sequences(self, pairs: Sequence[PreferencePair]) -> list[TokenizedExample]:
        """Chosen and rejected answer of each pair, in turn: sequence 2i is pair i's chosen."""
        return [sequence for pair in pairs for sequence in (pair.chosen, pair.rejected)]

    def normaliser(self, pairs: Sequence[PreferencePair]) -> int:
        return len(pairs)

    def loss(self, model, pairs, divide_by):
        batch = self.build(self._sequences(pairs))
        with torch.no_grad(), model.disable_adapter():
            reference = score_labels(model, batch).per_sequence(batch.n_sequences)
        policy = score_labels(model, batch).per_sequence(batch.n_sequences)
        losses, chosen, rejected = dpo_loss(
            policy[0::2], policy[1::2], reference[0::2], reference[1::2], self.beta
        )
        loss_sum = losses.sum()
        stats = {
            "loss_sum": loss_sum.item(),
            "pairs": len(pairs),
            "reward_correct": int((chosen > rejected).sum()),
            "margin_sum": (chosen - rejected).sum().item(),
            "tokens": batch.n_tokens,
        }
        return loss_sum / divide_by, stats

    def metrics(self, stats, prefix):
        return {
            f"{prefix}_loss": stats["loss_sum"] / stats["pairs"],
            f"{prefix}_reward_accuracy": stats["reward_correct"] / stats["pairs"],
            f"{prefix}_reward_margin": stats["margin_sum"] / stats["pairs"],
        }
