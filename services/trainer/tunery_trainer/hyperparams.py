"""Fine-tuning hyperparameters: the OpenAI `method.supervised.hyperparameters` object plus our LoRA
keys, and the rules that turn "auto" into numbers once the training set size is known."""

import math
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from tunery_common.training_rules import DEFAULT_MAX_SEQ_LEN, auto_n_epochs

BASE_LEARNING_RATE = 2e-4  # a common LoRA learning rate; `learning_rate_multiplier` scales it

Auto = Literal["auto"]


class Hyperparameters(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not a silent default

    n_epochs: Annotated[int, Field(ge=1, le=50)] | Auto = "auto"
    batch_size: Annotated[int, Field(ge=1, le=256)] | Auto = "auto"
    learning_rate_multiplier: Annotated[float, Field(gt=0, le=100)] | Auto = "auto"
    lora_r: int = Field(default=16, ge=1, le=256)
    lora_alpha: int = Field(default=32, ge=1)
    lora_dropout: float = Field(default=0.05, ge=0, lt=1)
    max_seq_len: int = Field(default=DEFAULT_MAX_SEQ_LEN, ge=16, le=32768)
    warmup_ratio: float = Field(default=0.03, ge=0, le=0.5)
    eval_every_steps: Annotated[int, Field(ge=1)] | Auto = "auto"


@dataclass(frozen=True)
class ResolvedHyperparameters:
    n_epochs: int
    batch_size: int
    learning_rate: float
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    max_seq_len: int
    warmup_ratio: float
    eval_every_steps: int


def resolve(h: Hyperparameters, n_train_examples: int) -> ResolvedHyperparameters:
    """Replace every "auto" with a number for a training set of `n_train_examples`.

    - n_epochs: OpenAI's rule (`tunery_common.training_rules.auto_n_epochs`), 3 epochs, but at
      least ~100 examples seen in total and at most ~25,000.
    - batch_size: ⌊n/32⌋ clamped to 1..8: small sets keep about 32 optimizer steps per epoch, and
      8 sequences of up to max_seq_len bound activation memory on one GPU or a CPU.
    - learning_rate: BASE_LEARNING_RATE (2e-4) × learning_rate_multiplier ("auto" = 1.0).
    - eval_every_steps: about ten reports per run, max(1, total_steps // 10).
    """
    if n_train_examples < 1:
        raise ValueError("no training examples")
    n = n_train_examples
    n_epochs = h.n_epochs if h.n_epochs != "auto" else auto_n_epochs(n)
    batch_size = h.batch_size if h.batch_size != "auto" else min(8, max(1, n // 32))
    multiplier = h.learning_rate_multiplier if h.learning_rate_multiplier != "auto" else 1.0
    total_steps = n_epochs * math.ceil(n / batch_size)
    eval_every = h.eval_every_steps if h.eval_every_steps != "auto" else max(1, total_steps // 10)
    return ResolvedHyperparameters(
        n_epochs=n_epochs,
        batch_size=batch_size,
        learning_rate=BASE_LEARNING_RATE * multiplier,
        lora_r=h.lora_r,
        lora_alpha=h.lora_alpha,
        lora_dropout=h.lora_dropout,
        max_seq_len=h.max_seq_len,
        warmup_ratio=h.warmup_ratio,
        eval_every_steps=eval_every,
    )
