"""Checkpoint folders: everything a run needs to continue exactly where it stopped.

    adapter/                    the LoRA adapter at this step (PEFT save_pretrained; servable alone)
    training_state.pt           optimizer, LR scheduler, torch RNG (CPU, CUDA) and shuffle generator
    progress.json               step, data position, metrics history, validation tracking, python
                                and numpy RNG, trained tokens, elapsed time
    best_adapter.safetensors    the adapter with the lowest validation loss so far (if any)

Only trainable (LoRA) tensors and their optimizer state are written, never the base model.
"""

import json
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from peft import set_peft_model_state_dict
from safetensors.torch import load_file, save_file

from tunery_trainer.validation_tracker import ValidationTracker

ADAPTER_DIR = "adapter"
TENSORS_FILE = "training_state.pt"
PROGRESS_FILE = "progress.json"
BEST_FILE = "best_adapter.safetensors"


@dataclass
class Progress:
    """Where a run stands; saved as JSON in every checkpoint."""

    total_steps: int
    n_train: int
    step: int = 0
    epoch: int = 1  # 1-based, the epoch in progress (or just finished, when position == n_train)
    order: list[int] | None = None  # this epoch's example order; None until drawn
    position: int = 0  # index in `order` of the next example to train on
    trained_tokens: int = 0
    elapsed_s: float = 0.0
    history: list[dict] = field(default_factory=list)
    window: dict[str, float] = field(default_factory=dict)  # training statistics since the last report
    tracker: ValidationTracker = field(default_factory=lambda: ValidationTracker(patience=None))


@dataclass
class Snapshot:
    """What `load_checkpoint` hands back besides the state it writes into the live objects."""

    progress: Progress
    best_weights: dict[str, torch.Tensor] | None


def trainable_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the trainable (LoRA) tensors, by parameter name."""
    return {
        name: p.detach().to("cpu", copy=True).contiguous()
        for name, p in model.named_parameters()
        if p.requires_grad
    }


@torch.no_grad()
def load_trainable_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    for name, p in model.named_parameters():
        if p.requires_grad:
            p.copy_(weights[name])


def save_checkpoint(
    folder: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    shuffle: torch.Generator,
    progress: Progress,
    best_weights: dict[str, torch.Tensor] | None,
) -> None:
    """Write the checkpoint into `folder` (replaced whole: readers never see half of one)."""
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    model.save_pretrained(partial / ADAPTER_DIR)
    tensors = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "shuffle_rng": shuffle.get_state(),
    }
    torch.save(tensors, partial / TENSORS_FILE)
    if best_weights is not None:
        save_file(best_weights, partial / BEST_FILE)
    numpy_state = np.random.get_state()
    document = {
        "progress": asdict(progress),
        "python_rng": random.getstate(),
        "numpy_rng": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
    }
    (partial / PROGRESS_FILE).write_text(json.dumps(document))
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)


def load_checkpoint(
    folder: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    shuffle: torch.Generator,
) -> Snapshot:
    """Restore adapter, optimizer, scheduler and every RNG from `folder`; return the progress."""
    if not (folder / PROGRESS_FILE).exists():
        raise FileNotFoundError(f"{folder} is not a training checkpoint (no {PROGRESS_FILE})")
    document = json.loads((folder / PROGRESS_FILE).read_text())
    adapter = load_file(folder / ADAPTER_DIR / "adapter_model.safetensors")
    result = set_peft_model_state_dict(model, adapter)
    if result.unexpected_keys:
        raise ValueError(f"{folder}: the adapter does not fit this model ({result.unexpected_keys[0]})")
    tensors = torch.load(folder / TENSORS_FILE, weights_only=True)
    optimizer.load_state_dict(tensors["optimizer"])
    scheduler.load_state_dict(tensors["scheduler"])
    torch.set_rng_state(tensors["torch_rng"])
    if tensors["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(tensors["cuda_rng"])
    shuffle.set_state(tensors["shuffle_rng"])
    version, internal, gauss = document["python_rng"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, *rest = document["numpy_rng"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), *rest))

    saved = document["progress"]
    progress = Progress(**{**saved, "tracker": ValidationTracker.from_state(saved["tracker"])})
    best_file = folder / BEST_FILE
    return Snapshot(progress=progress, best_weights=load_file(best_file) if best_file.exists() else None)
