"""Checkpoints of a job: what the training loop saved, kept so that training can go on elsewhere.

Each checkpoint is a servable adapter (a model `<fine-tuned model>:ckpt-step-<N>`) and an entry in
the job record (OpenAI's checkpoint object). The newest also keeps the whole folder the loop wrote
(adapter, optimizer, scheduler, RNG and data position) as a tar in the object store: a worker that
takes the job over after a pause, a shutdown or a crash resumes from it. Older folders are deleted;
their adapters stay.
"""

import asyncio
import tarfile
import tempfile
from pathlib import Path

from tunery_common.bus import Bus
from tunery_common.ids import new_id
from tunery_common.records import CheckpointRecord, JobRecord

from tunery_trainer.publish import publish_adapter, unpublish_adapter
from tunery_trainer.train_state import ADAPTER_DIR

# The figures OpenAI's checkpoint object carries.
CHECKPOINT_METRICS = (
    "step",
    "train_loss",
    "train_mean_token_accuracy",
    "valid_loss",
    "valid_mean_token_accuracy",
    "full_valid_loss",
    "full_valid_mean_token_accuracy",
)


# Checkpoints a job keeps: its record stays far below the KV value limit (1 MB) however often a
# long run saves; the oldest go first (the published model is kept apart from them).
MAX_CHECKPOINTS = 100


def state_object_name(org: str, job_id: str, step: int) -> str:
    return f"checkpoints/{org}/{job_id}/step-{step}.tar"


def resume_point(job: JobRecord) -> CheckpointRecord | None:
    """The checkpoint whose training state a (re)started worker continues from."""
    return next((c for c in reversed(job.checkpoints) if c.state_object), None)


def checkpoint_metrics(metrics: dict) -> dict[str, float]:
    return {k: float(metrics[k]) for k in CHECKPOINT_METRICS if metrics.get(k) is not None}


def _pack_folder(folder: Path, archive: Path) -> None:
    with tarfile.open(archive, mode="w") as tar:
        for path in sorted(folder.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(folder)), recursive=False)


def _unpack_folder(archive: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, mode="r") as tar:
        tar.extractall(target, filter="data")


async def save_checkpoint(
    bus: Bus,
    job: JobRecord,
    owner: str,
    step: int,
    epoch: int,
    folder: Path,
    metrics: dict,
) -> CheckpointRecord | None:
    """Stores the checkpoint folder and records it in the job; None when the job is no longer this
    worker's (cancelled, or taken over), in which case nothing of the training state is kept."""
    state_object = state_object_name(job.org, job.id, step)
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        archive = Path(tmp) / "state.tar"
        await asyncio.to_thread(_pack_folder, folder, archive)
        with open(archive, "rb") as data:
            await bus.put_object(state_object, data)
    model = await publish_adapter(bus, job, folder / ADAPTER_DIR, step)
    checkpoint = CheckpointRecord(
        id=new_id("ftckpt"),
        step_number=step,
        epoch=epoch,
        metrics=checkpoint_metrics(metrics),
        fine_tuned_model_checkpoint=model.id,
        state_object=state_object,
    )
    superseded: list[str] = []  # state objects no longer needed
    dropped: list[CheckpointRecord] = []  # over MAX_CHECKPOINTS

    def append(rec: JobRecord):
        superseded.clear()
        dropped.clear()
        if rec.is_final or rec.lease_owner != owner:
            return None
        # A run resumed from an earlier checkpoint may save this step again: the new one replaces it.
        kept = [c for c in rec.checkpoints if c.step_number != step]
        superseded.extend(
            c.state_object for c in rec.checkpoints if c.state_object not in (None, state_object)
        )
        kept = [c.model_copy(update={"state_object": None}) for c in kept]
        excess = max(0, len(kept) + 1 - MAX_CHECKPOINTS)
        dropped.extend(kept[:excess])
        return rec.model_copy(update={"checkpoints": [*kept[excess:], checkpoint]})

    updated = await bus.jobs.mutate(job.org, job.id, append)
    if updated is None or not updated.checkpoints or updated.checkpoints[-1].id != checkpoint.id:
        await bus.delete_object(state_object)
        return None
    # Record first, then delete: a crash in between leaves an unused object, never a dangling one.
    for name in superseded:
        await bus.delete_object(name)
    for old in dropped:
        await unpublish_adapter(bus, job, old.step_number)
    return checkpoint


async def download_state(bus: Bus, checkpoint: CheckpointRecord, target: Path) -> Path:
    """The checkpoint's training state as a folder, to resume from."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        archive = Path(tmp) / "state.tar"
        with open(archive, "wb") as out:
            await bus.get_object(checkpoint.state_object, writeinto=out)
        await asyncio.to_thread(_unpack_folder, archive, target)
    return target
