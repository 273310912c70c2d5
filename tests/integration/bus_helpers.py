"""Helpers for tests that talk to a real NATS: store a file, wait on a job record."""

import asyncio
import json

from tunery_common.bus import Bus
from tunery_common.records import FileRecord


async def upload(bus: Bus, org: str, file_id: str, rows: list, purpose: str = "fine-tune") -> None:
    data = "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows).encode()
    record = FileRecord(id=file_id, org=org, bytes=len(data), filename=f"{file_id}.jsonl", purpose=purpose)
    await bus.put_object(record.object_name, data)
    await bus.files.create(org, file_id, record)


async def wait_status(bus: Bus, org: str, job_id: str, statuses: set[str]):
    """Waits on the job record's KV watch (no polling sleeps)."""
    watcher = await bus.jobs.kv.watch(bus.jobs.key(org, job_id))
    try:
        async with asyncio.timeout(60):
            async for entry in watcher:
                if entry is not None and entry.value:
                    job = json.loads(entry.value)
                    if job["status"] in statuses:
                        return job
    finally:
        await watcher.stop()
