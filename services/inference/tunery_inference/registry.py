"""The fine-tuned models this replica can serve: a KV watch on the model registry.

A fine-tuned model is `ft:<base>:<org>:<suffix>:<job>`; each of its checkpoints is the same id
with `:ckpt-step-<N>` appended, a model of its own (KV id `<job>-ckpt-step-<N>`) that is served
like the final one. Each final model's adapter is fetched from the object store as soon as it
appears, so the first request for it does not pay the download; checkpoints are many and rarely
served, so theirs is fetched on first use. A request that races the watch reads the KV directly.
An alias `ft:<base>:<org>:<suffix>` (no job) resolves to the newest promoted model of that name.
"""

import asyncio
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from nats.js.kv import KV_DEL, KV_PURGE
from tunery_common.adapters import unpack_adapter
from tunery_common.bus import Bus, RecordStore
from tunery_common.promotion import is_alias, model_alias
from tunery_common.records import ModelRecord, model_key_id, parse_model_id

log = logging.getLogger(__name__)


class ModelRegistry:
    def __init__(self, bus: Bus, adapter_dir: Path):
        self.bus = bus
        self.adapter_dir = adapter_dir
        self._models: dict[tuple[str, str], ModelRecord] = {}  # (org, model id) → ready record
        self._fetches: dict[tuple[str, str], asyncio.Task] = {}  # (org, key id) → its download
        self.ready = asyncio.Event()  # set once the watch has replayed the current registry
        self.applied_revision = 0  # the last registry change this replica has applied
        self._applied = asyncio.Condition()
        # Told the key id of each model that goes away (its adapter can leave the engines).
        self.on_removed: list[Callable[[str], None]] = []

    async def watch(self) -> None:
        watcher = await self.bus.models.kv.watchall()
        try:
            async for entry in watcher:
                if entry is None:
                    self.ready.set()
                    continue
                org, key_id = RecordStore.split_key(entry.key)
                record = None
                if entry.operation not in (KV_DEL, KV_PURGE) and entry.value:
                    record = ModelRecord.model_validate_json(entry.value)
                if record is not None and record.status == "ready":
                    self._remember(record)
                else:
                    self._forget(org, key_id)
                await self._applied_up_to(entry.revision)
        finally:
            await watcher.stop()

    async def wait_applied(self, revision: int) -> None:
        """Returns once this replica has applied the registry change made at `revision`
        (the KV revision a writer got back), so that a writer can read its own change here."""
        async with self._applied:
            await self._applied.wait_for(lambda: self.applied_revision >= revision)

    async def _applied_up_to(self, revision: int) -> None:
        async with self._applied:
            self.applied_revision = max(self.applied_revision, revision)
            self._applied.notify_all()

    def _remember(self, record: ModelRecord) -> None:
        self._models[(record.org, record.id)] = record
        if record.checkpoint_step is None and (record.org, record.key_id) not in self._fetches:
            self._start_fetch(record)
        log.info("model %s registered", record.id)

    def _forget(self, org: str, key_id: str) -> None:
        for key, record in list(self._models.items()):
            if key[0] == org and record.key_id == key_id:
                del self._models[key]
                log.info("model %s removed", record.id)
        self._fetches.pop((org, key_id), None)
        shutil.rmtree(self._adapter_folder(org, key_id), ignore_errors=True)
        for callback in self.on_removed:
            callback(key_id)

    def _adapter_folder(self, org: str, key_id: str) -> Path:
        return self.adapter_dir / org / key_id

    def _start_fetch(self, record: ModelRecord) -> asyncio.Task:
        task = asyncio.create_task(self._fetch(record))
        self._fetches[(record.org, record.key_id)] = task
        return task

    async def _fetch(self, record: ModelRecord) -> Path:
        target = self._adapter_folder(record.org, record.key_id)
        if not (target / "adapter_config.json").exists():
            data = await self.bus.get_object(record.adapter_object)
            await asyncio.to_thread(unpack_adapter, data, target)
        return target

    async def lookup(self, org: str, model_id: str) -> ModelRecord | None:
        """The ready fine-tuned model (or checkpoint) of this org with this id, or None; an alias
        `ft:<base>:<org>:<suffix>` gives the newest promoted model it names."""
        if is_alias(model_id):
            await self._catch_up()
            return self.promoted(org, model_id)
        record = self._models.get((org, model_id))
        parsed = parse_model_id(model_id)
        if record is not None or parsed is None:
            return record
        found = await self.bus.models.get_with_revision(org, model_key_id(*parsed))
        if found is None:
            return None
        record, revision = found
        if revision <= self.applied_revision:
            # The watch has applied this entry (or a later change) meanwhile: it knows best.
            return self._models.get((org, model_id))
        if record.id != model_id or record.status != "ready":
            return None
        self._remember(record)
        return record

    async def _catch_up(self, timeout_s: float = 2.0) -> None:
        """Waits (briefly) until the watch has applied every registry change stored so far: an
        alias read right after a promotion then sees it, as a lookup by full id does."""
        status = await self.bus.models.kv.status()
        try:
            await asyncio.wait_for(self.wait_applied(status.stream_info.state.last_seq), timeout_s)
        except TimeoutError:
            log.warning("model registry watch is behind; answering from what it has applied")

    def promoted(self, org: str, alias: str) -> ModelRecord | None:
        """The newest promoted model behind an alias: pending and rejected ones take no traffic."""
        candidates = [
            r
            for (o, _), r in self._models.items()
            if o == org and r.promotion == "promoted" and model_alias(r.id) == alias
        ]
        return max(candidates, key=lambda r: (r.created_at, r.promoted_at or 0), default=None)

    async def adapter_path(self, record: ModelRecord) -> Path:
        task = self._fetches.get((record.org, record.key_id))
        if task is None or (task.done() and task.exception() is not None):
            task = self._start_fetch(record)
        return await task

    def models_of(self, org: str) -> list[ModelRecord]:
        """The org's fine-tuned models for `/v1/models`: like OpenAI, checkpoints are not listed
        (they are reachable by id, and through their job's checkpoints)."""
        return sorted(
            (r for (o, _), r in self._models.items() if o == org and r.checkpoint_step is None),
            key=lambda r: r.created_at,
        )
