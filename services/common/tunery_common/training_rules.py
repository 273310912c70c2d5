"""Training rules that data-prep's estimates and the trainer's hyperparameters share.

The epoch rule is OpenAI's as its cookbook writes it: 3 epochs, but such that the examples seen in total
(n × epochs) lie in 100..25,000, with epochs in 1..25. Below the band we round up (the cookbook
floors, which leaves e.g. 33 examples × 3 epochs = 99 under the 100 it aims for).
"""

import math

TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
MIN_DEFAULT_EPOCHS = 1
MAX_DEFAULT_EPOCHS = 25
# Tokens per example the trainer keeps unless a job sets max_seq_len (the oldest are cut).
DEFAULT_MAX_SEQ_LEN = 1024


def auto_n_epochs(n_examples: int) -> int:
    """Epochs for a training set of `n_examples` when the user leaves n_epochs on "auto"."""
    if n_examples < 1:
        raise ValueError("no training examples")
    if n_examples * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_DEFAULT_EPOCHS, math.ceil(MIN_TARGET_EXAMPLES / n_examples))
    if n_examples * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(MIN_DEFAULT_EPOCHS, MAX_TARGET_EXAMPLES // n_examples)
    return TARGET_EPOCHS
