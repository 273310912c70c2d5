"""The fine-tuned models this replica can serve: a KV watch on the model registry.

Each published adapter is fetched from the object store as soon as it appears, so the first
request for it does not pay the download. A request that races the watch reads the KV directly.
"""

import asyncio
import logging
import shutil
from pathlib import Path

from nats.js.kv import KV_DEL, KV_PURGE
from tunery_common.adapters import unpack_adapter
from tunery_common.bus import Bus
from tunery_common.records import ModelRecord, job_id_of_model

log = logging.getLogger(__name__)


class ModelRegistry:
    def __init__(self, bus: Bus, adapter_dir: Path):
        self.bus = bus
        self.adapter_dir = adapter_dir
        self._models: dict[tuple[str, str], ModelRecord] = {}
        self._fetches: dict[str, asyncio.Task] = {}
        self.ready = asyncio.Event()  # set once the watch has replayed the current registry

    async def watch(self) -> None:
        watcher = await self.bus.models.kv.watchall()
        try:
            async for entry in watcher:
                if entry is None:
                    self.ready.set()
                    continue
                org, _, job_id = entry.key.partition(".")
                if entry.operation in (KV_DEL, KV_PURGE) or not entry.value:
                    self._forget(org, job_id)
                    continue
                record = ModelRecord.model_validate_json(entry.value)
                self._remember(record)
        finally:
            await watcher.stop()

    def _remember(self, record: ModelRecord) -> None:
        self._models[(record.org, record.id)] = record
        if record.job_id not in self._fetches:
            self._fetches[record.job_id] = asyncio.create_task(self._fetch(record))
        log.info("model %s registered", record.id)

    def _forget(self, org: str, job_id: str) -> None:
        for key, record in list(self._models.items()):
            if key[0] == org and record.job_id == job_id:
                del self._models[key]
        self._fetches.pop(job_id, None)
        shutil.rmtree(self.adapter_dir / job_id, ignore_errors=True)

    async def _fetch(self, record: ModelRecord) -> Path:
        target = self.adapter_dir / record.job_id
        if not (target / "adapter_config.json").exists():
            data = await self.bus.get_object(record.adapter_object)
            await asyncio.to_thread(unpack_adapter, data, target)
        return target

    async def lookup(self, org: str, model_id: str) -> ModelRecord | None:
        record = self._models.get((org, model_id))
        if record is None:
            job_id = job_id_of_model(model_id)
            found = await self.bus.models.get(org, job_id) if job_id else None
            if found is None or found.id != model_id or found.status != "ready":
                return None
            self._remember(found)
            record = found
        return record

    async def adapter_path(self, record: ModelRecord) -> Path:
        task = self._fetches.get(record.job_id)
        if task is None or (task.done() and task.exception() is not None):
            task = self._fetches[record.job_id] = asyncio.create_task(self._fetch(record))
        return await task

    def models_of(self, org: str) -> list[ModelRecord]:
        return sorted((r for (o, _), r in self._models.items() if o == org), key=lambda r: r.created_at)
