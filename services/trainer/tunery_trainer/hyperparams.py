"""Fine-tuning hyperparameters: the OpenAI `method.<type>.hyperparameters` object plus our own keys,
and the rules that turn "auto" into numbers once the training set size is known."""

import math
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from tunery_common.training_rules import DEFAULT_MAX_SEQ_LEN, auto_n_epochs

BASE_LEARNING_RATE = 2e-4  # a common LoRA learning rate; `learning_rate_multiplier` scales it
DEFAULT_DPO_BETA = 0.1

# Every linear layer of attention and MLP; no lm_head or embeddings and no modules_to_save, so
# the adapter stays a pure LoRA that vLLM can load beside the base model.
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

Auto = Literal["auto"]


class LoraSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    r: int = Field(default=16, ge=1, le=256)
    alpha: int = Field(default=32, ge=1)
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=lambda: list(ALL_LINEAR), min_length=1
    )


class Hyperparameters(BaseModel):
    """`method.supervised.hyperparameters`: OpenAI's three keys, then ours."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not a silent default

    n_epochs: Annotated[int, Field(ge=1, le=50)] | Auto = "auto"
    batch_size: Annotated[int, Field(ge=1, le=256)] | Auto = "auto"
    learning_rate_multiplier: Annotated[float, Field(gt=0, le=100)] | Auto = "auto"
    lora: LoraSettings = Field(default_factory=LoraSettings)
    quantization: Literal["none", "4bit"] = "none"  # 4bit: QLoRA, NF4 with double quantisation
    max_seq_len: int = Field(default=DEFAULT_MAX_SEQ_LEN, ge=16, le=32768)
    packing: bool = True
    warmup_ratio: float = Field(default=0.03, ge=0, le=0.5)
    lr_scheduler: Literal["linear", "cosine"] = "linear"
    # batch_size examples per micro-batch; the optimizer steps every N micro-batches.
    gradient_accumulation_steps: int = Field(default=1, ge=1, le=64)
    gradient_checkpointing: bool = False
    early_stopping_patience: Annotated[int, Field(ge=1)] | None = None  # evaluations; needs a validation file
    eval_every_steps: Annotated[int, Field(ge=1)] | Auto = "auto"
    checkpoint_every_steps: Annotated[int, Field(ge=1)] | None = None  # besides every epoch end


class DpoHyperparameters(Hyperparameters):
    """`method.dpo.hyperparameters`: the supervised keys plus OpenAI's `beta`."""

    beta: Annotated[float, Field(gt=0, le=10)] | Auto = "auto"


@dataclass(frozen=True)
class ResolvedHyperparameters:
    n_epochs: int
    batch_size: int
    learning_rate: float
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    target_modules: tuple[str, ...]
    quantization: str
    max_seq_len: int
    packing: bool
    warmup_ratio: float
    lr_scheduler: str
    gradient_accumulation_steps: int
    gradient_checkpointing: bool
    early_stopping_patience: int | None
    eval_every_steps: int
    checkpoint_every_steps: int | None
    method: str = "supervised"  # or "dpo"
    beta: float = DEFAULT_DPO_BETA  # DPO only


def resolve(h: Hyperparameters, n_train_examples: int) -> ResolvedHyperparameters:
    """Replace every "auto" with a number for a training set of `n_train_examples`.

    - n_epochs: OpenAI's rule (`tunery_common.training_rules.auto_n_epochs`), 3 epochs, but at
      least ~100 examples seen in total and at most ~25,000.
    - batch_size: ⌊n/32⌋ clamped to 1..8: small sets keep about 32 optimizer steps per epoch, and
      8 sequences of up to max_seq_len bound activation memory on one GPU or a CPU.
    - learning_rate: BASE_LEARNING_RATE (2e-4) × learning_rate_multiplier ("auto" = 1.0).
    - eval_every_steps: about ten reports per run, max(1, total_steps // 10).
    - beta (DPO): 0.1.
    """
    if n_train_examples < 1:
        raise ValueError("no training examples")
    n = n_train_examples
    n_epochs = h.n_epochs if h.n_epochs != "auto" else auto_n_epochs(n)
    batch_size = h.batch_size if h.batch_size != "auto" else min(8, max(1, n // 32))
    multiplier = h.learning_rate_multiplier if h.learning_rate_multiplier != "auto" else 1.0
    total_steps = n_epochs * math.ceil(n / (batch_size * h.gradient_accumulation_steps))
    eval_every = h.eval_every_steps if h.eval_every_steps != "auto" else max(1, total_steps // 10)
    is_dpo = isinstance(h, DpoHyperparameters)
    return ResolvedHyperparameters(
        n_epochs=n_epochs,
        batch_size=batch_size,
        learning_rate=BASE_LEARNING_RATE * multiplier,
        lora_r=h.lora.r,
        lora_alpha=h.lora.alpha,
        lora_dropout=h.lora.dropout,
        target_modules=tuple(h.lora.target_modules),
        quantization=h.quantization,
        max_seq_len=h.max_seq_len,
        packing=h.packing,
        warmup_ratio=h.warmup_ratio,
        lr_scheduler=h.lr_scheduler,
        gradient_accumulation_steps=h.gradient_accumulation_steps,
        gradient_checkpointing=h.gradient_checkpointing,
        early_stopping_patience=h.early_stopping_patience,
        eval_every_steps=eval_every,
        checkpoint_every_steps=h.checkpoint_every_steps,
        method="dpo" if is_dpo else "supervised",
        beta=(h.beta if h.beta != "auto" else DEFAULT_DPO_BETA) if is_dpo else DEFAULT_DPO_BETA,
    )
