"""Helpers for tests that talk to a real NATS: store a file, wait on a job or eval record."""

import asyncio
import json

from tunery_common.bus import Bus, RecordStore
from tunery_common.records import FileRecord


async def upload(bus: Bus, org: str, file_id: str, rows: list, purpose: str = "fine-tune") -> None:
    data = "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows).encode()
    record = FileRecord(id=file_id, org=org, bytes=len(data), filename=f"{file_id}.jsonl", purpose=purpose)
    await bus.put_object(record.object_name, data)
    await bus.files.create(org, file_id, record)


async def wait_status(bus: Bus, org: str, job_id: str, statuses: set[str]):
    return await wait_record(bus.jobs, org, job_id, statuses)


async def wait_record(store: RecordStore, org: str, record_id: str, statuses: set[str]) -> dict:
    """Waits on the record's KV watch (no polling sleeps) until its status is one of `statuses`."""
    watcher = await store.kv.watch(store.key(org, record_id))
    try:
        # A deadline against hangs, not a timing check: a loaded CI machine may take minutes.
        async with asyncio.timeout(600):
            async for entry in watcher:
                if entry is not None and entry.value:
                    record = json.loads(entry.value)
                    if record["status"] in statuses:
                        return record
    finally:
        await watcher.stop()
