"""Publishing a trained adapter: archive into the object store, record in the model registry."""

from pathlib import Path

from tunery_common.adapters import adapter_object_name, pack_adapter
from tunery_common.bus import Bus, make_event
from tunery_common.records import JobRecord, ModelRecord, fine_tuned_model_id


async def publish_adapter(bus: Bus, job: JobRecord, adapter_dir: Path) -> ModelRecord:
    model = ModelRecord(
        id=fine_tuned_model_id(job.model, job.org, job.suffix, job.id),
        org=job.org,
        parent=job.model,
        job_id=job.id,
        adapter_object=adapter_object_name(job.org, job.id),
    )
    await bus.put_object(model.adapter_object, pack_adapter(adapter_dir))
    await bus.models.put(job.org, job.id, model)
    await bus.publish_event(make_event("model", job.id, job.org, "published", f"Published {model.id}"))
    return model
