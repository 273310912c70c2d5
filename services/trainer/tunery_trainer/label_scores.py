"""Per-token log-probabilities of the trained (label) tokens of a batch.

The output layer runs only at positions that carry a label: most positions are prompt, and
vocabulary-sized logits for all of them would dominate the step's time and memory.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tunery_trainer.data import IGNORE_INDEX
from tunery_trainer.packing import Batch


@dataclass(frozen=True)
class LabelScores:
    logprobs: torch.Tensor  # (n_labels,) log p(label token | its prefix), fp32
    correct: torch.Tensor  # (n_labels,) bool: the label is the argmax prediction
    sequence_ids: torch.Tensor  # (n_labels,) which sequence of the batch each label belongs to

    def per_sequence(self, n_sequences: int) -> torch.Tensor:
        """Summed label log-probabilities of each sequence, (n_sequences,)."""
        sums = torch.zeros(n_sequences, dtype=self.logprobs.dtype, device=self.logprobs.device)
        return sums.index_add(0, self.sequence_ids, self.logprobs)


def score_labels(model: torch.nn.Module, batch: Batch) -> LabelScores:
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    bounds = {} if batch.sequence_bounds is None else {"sequence_bounds": batch.sequence_bounds}
    hidden = causal_lm.get_decoder()(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        use_cache=False,
        **bounds,  # reaches every attention layer (see packed_attention)
    ).last_hidden_state
    targets = batch.labels[:, 1:]  # position t predicts token t+1
    mask = targets != IGNORE_INDEX
    logits = causal_lm.get_output_embeddings()(hidden[:, :-1][mask]).float()  # fp32: stable in bf16
    wanted = targets[mask]
    return LabelScores(
        logprobs=-F.cross_entropy(logits, wanted, reduction="none"),
        correct=logits.argmax(dim=-1) == wanted,
        sequence_ids=batch.sequence_ids[:, 1:][mask],
    )
