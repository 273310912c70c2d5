"""Publishing a trained adapter: archive into the object store, record in the model registry.

The job's final adapter is the model `ft:<base>:<org>:<suffix>:<job>`; each checkpoint's adapter
is a model of its own, `<that id>:ckpt-step-<N>`, servable like the final one.
"""

from pathlib import Path

from tunery_common.adapters import adapter_object_name, pack_adapter
from tunery_common.bus import Bus, make_event
from tunery_common.records import (
    JobRecord,
    ModelRecord,
    checkpoint_model_id,
    fine_tuned_model_id,
    model_key_id,
)


def model_id_of(job: JobRecord, step: int | None = None) -> str:
    final = fine_tuned_model_id(job.model, job.org, job.suffix, job.id)
    return final if step is None else checkpoint_model_id(final, step)


async def publish_adapter(
    bus: Bus, job: JobRecord, adapter_dir: Path, step: int | None = None
) -> ModelRecord:
    """The adapter as a servable model: the job's own (step None) or that of its checkpoint at `step`."""
    model = ModelRecord(
        id=model_id_of(job, step),
        org=job.org,
        parent=job.model,
        job_id=job.id,
        adapter_object=adapter_object_name(job.org, model_key_id(job.id, step)),
        checkpoint_step=step,
        # A gated job's model waits for eval-judge's verdict before its alias serves it.
        promotion="pending" if job.eval and step is None else "promoted",
        eval_id=(job.eval or {}).get("eval_id") if step is None else None,
    )
    # Bytes first, record second: a model the registry shows always has its adapter.
    await bus.put_object(model.adapter_object, pack_adapter(adapter_dir))
    await bus.models.put(job.org, model.key_id, model)
    await bus.publish_event(make_event("model", model.key_id, job.org, "published", f"Published {model.id}"))
    return model


async def unpublish_adapter(bus: Bus, job: JobRecord, step: int) -> None:
    """Removes a checkpoint's model: record first, so the registry never offers a missing adapter."""
    key_id = model_key_id(job.id, step)
    await bus.models.delete(job.org, key_id)
    await bus.delete_object(adapter_object_name(job.org, key_id))
