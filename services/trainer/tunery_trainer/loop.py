"""The LoRA training loop, readable top to bottom: setup → train (with periodic metrics) → save.

Plain PyTorch around a PEFT-wrapped Hugging Face model, no Trainer class. On CPU a run is fully
deterministic for a given seed and data. It runs in a worker thread: cancellation is polled
through `should_stop`, never signalled.
"""

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, get_linear_schedule_with_warmup

from tunery_trainer.data import IGNORE_INDEX, TokenizedExample
from tunery_trainer.hyperparams import ResolvedHyperparameters

log = logging.getLogger(__name__)

# Every linear layer of attention and MLP; no lm_head or embeddings and no modules_to_save, so
# the adapter stays a pure LoRA that vLLM can load beside the base model.
LORA_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
MAX_VALID_EXAMPLES = 256  # validation runs at every report: keep it bounded
MAX_GRAD_NORM = 1.0


@dataclass(frozen=True)
class TrainResult:
    steps: int
    trained_tokens: int  # non-padding input tokens processed, over all epochs
    final_train_loss: float | None  # of the last metrics report; None if stopped before one
    final_valid_loss: float | None
    adapter_dir: Path | None  # None when stopped
    stopped: bool


def train_lora(
    model_dir: Path,
    train: list[TokenizedExample],
    valid: list[TokenizedExample],
    hp: ResolvedHyperparameters,
    seed: int,
    out_dir: Path,
    on_metrics: Callable[[dict], None],
    should_stop: Callable[[], bool],
) -> TrainResult:
    """Train a LoRA adapter on `train` and save it in `out_dir`.

    `on_metrics` gets a report every `hp.eval_every_steps` steps and at the end of each epoch
    (`epoch` is 1-based; losses and accuracies are over label tokens, `train_*` since the last
    report). `should_stop` is polled before every step; when it returns True the run ends
    without saving and the result says `stopped=True`.
    """
    if not train:
        raise ValueError("no training examples")

    # --- setup ---
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    torch.manual_seed(seed)  # LoRA init and dropout draw from the global generator
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device)
    pad_id = model.config.pad_token_id or 0  # any id works: padded positions are masked out
    model = get_peft_model(
        model,
        LoraConfig(
            r=hp.lora_r,
            lora_alpha=hp.lora_alpha,
            lora_dropout=hp.lora_dropout,
            target_modules=list(LORA_TARGET_MODULES),
            bias="none",
            task_type="CAUSAL_LM",
        ),
    )
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=hp.learning_rate, weight_decay=0.0)
    steps_per_epoch = math.ceil(len(train) / hp.batch_size)
    total_steps = hp.n_epochs * steps_per_epoch
    scheduler = get_linear_schedule_with_warmup(
        optimizer, math.ceil(hp.warmup_ratio * total_steps), total_steps
    )
    shuffle = torch.Generator().manual_seed(seed)  # its own generator: batch order ignores dropout
    valid = valid[:MAX_VALID_EXAMPLES]

    # --- train ---
    step = trained_tokens = 0
    window = _Window()
    last_report: dict = {}
    started = time.monotonic()
    for epoch in range(1, hp.n_epochs + 1):
        order = torch.randperm(len(train), generator=shuffle).tolist()
        for first in range(0, len(train), hp.batch_size):
            if should_stop():
                log.info("stopped at step %d of %d", step, total_steps)
                return TrainResult(
                    steps=step,
                    trained_tokens=trained_tokens,
                    final_train_loss=last_report.get("train_loss"),
                    final_valid_loss=last_report.get("valid_loss"),
                    adapter_dir=None,
                    stopped=True,
                )
            batch = _collate([train[i] for i in order[first : first + hp.batch_size]], pad_id, device)
            loss_sum, correct, n_labels = _loss_sum(model, batch)
            (loss_sum / n_labels).backward()
            torch.nn.utils.clip_grad_norm_(trainable, MAX_GRAD_NORM)
            learning_rate = scheduler.get_last_lr()[0]  # the rate this step uses
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            tokens = int(batch["attention_mask"].sum())
            trained_tokens += tokens
            window.add(loss_sum.item() / n_labels, correct, n_labels, tokens)

            epoch_done = first + hp.batch_size >= len(train)
            if step % hp.eval_every_steps == 0 or epoch_done:
                elapsed = time.monotonic() - started
                last_report = {
                    "step": step,
                    "epoch": epoch,
                    "total_steps": total_steps,
                    "train_loss": window.loss(),
                    "train_mean_token_accuracy": window.accuracy(),
                    "learning_rate": learning_rate,
                    "tokens_per_second": window.tokens_per_second(),
                    "elapsed_s": elapsed,
                    "eta_s": elapsed / step * (total_steps - step),
                }
                if valid:
                    valid_loss, valid_accuracy = _evaluate(model, valid, hp.batch_size, pad_id, device)
                    last_report["valid_loss"] = valid_loss
                    last_report["valid_mean_token_accuracy"] = valid_accuracy
                log.info("metrics %s", last_report)
                on_metrics(last_report)
                window = _Window()  # starts after validation: throughput is training only

    # --- save ---
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    return TrainResult(
        steps=step,
        trained_tokens=trained_tokens,
        final_train_loss=last_report["train_loss"],
        final_valid_loss=last_report.get("valid_loss"),
        adapter_dir=out_dir,
        stopped=False,
    )


class _Window:
    """Training statistics since the last metrics report."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.step_losses: list[float] = []
        self.correct = self.labels = self.tokens = 0

    def add(self, loss: float, correct: int, labels: int, tokens: int) -> None:
        self.step_losses.append(loss)
        self.correct += correct
        self.labels += labels
        self.tokens += tokens

    def loss(self) -> float:
        return sum(self.step_losses) / len(self.step_losses)

    def accuracy(self) -> float:
        return self.correct / self.labels

    def tokens_per_second(self) -> float:
        return self.tokens / max(time.monotonic() - self.started, 1e-9)


def _collate(examples: list[TokenizedExample], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example of this batch."""
    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        input_ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        attention_mask[row, :n] = 1
    return {
        "input_ids": input_ids.to(device),
        "labels": labels.to(device),
        "attention_mask": attention_mask.to(device),
    }


def _loss_sum(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int, int]:
    """Summed next-token cross-entropy over label tokens, correct argmax predictions, label count.

    The output layer runs only at positions that carry a label: most positions are prompt, and
    vocabulary-sized logits for all of them would dominate the step's time and memory.
    """
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = causal_lm.get_decoder()(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
    ).last_hidden_state
    targets = batch["labels"][:, 1:]  # position t predicts token t+1
    mask = targets != IGNORE_INDEX
    logits = causal_lm.get_output_embeddings()(hidden[:, :-1][mask]).float()  # fp32: stable loss in bf16
    wanted = targets[mask]
    loss_sum = F.cross_entropy(logits, wanted, reduction="sum")
    correct = int((logits.argmax(dim=-1) == wanted).sum())
    return loss_sum, correct, int(mask.sum())


@torch.no_grad()
def _evaluate(
    model: torch.nn.Module,
    examples: list[TokenizedExample],
    batch_size: int,
    pad_id: int,
    device: torch.device,
) -> tuple[float, float]:
    """Loss and token accuracy over all label tokens of `examples`, in eval mode (no dropout)."""
    model.eval()
    loss_sum = 0.0
    correct = labels = 0
    for first in range(0, len(examples), batch_size):
        batch = _collate(examples[first : first + batch_size], pad_id, device)
        batch_loss, batch_correct, batch_labels = _loss_sum(model, batch)
        loss_sum += batch_loss.item()
        correct += batch_correct
        labels += batch_labels
    model.train()
    return loss_sum / labels, correct / labels
