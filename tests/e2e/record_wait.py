"""Waiting for a record of the running stack to reach a status: a KV watch, no sleeps or polling."""

import asyncio
import json
from collections.abc import Callable

from tunery_common.bus import Bus


def wait_for_record(stack, store: str, org: str, record_id: str, statuses, timeout: float = 600) -> dict:
    """The record of `bus.<store>` (jobs, evals) once its status is one of `statuses`."""
    return wait_for_record_where(stack, store, org, record_id, lambda r: r["status"] in statuses, timeout)


def wait_for_record_where(
    stack, store: str, org: str, record_id: str, check: Callable[[dict], bool], timeout: float = 600
) -> dict:
    """The record of `bus.<store>` once `check` holds for it."""

    async def watch():
        bus = await Bus.connect(stack.nats_url, "e2e-test")
        records = getattr(bus, store)
        watcher = await records.kv.watch(records.key(org, record_id))
        try:
            async with asyncio.timeout(timeout):
                async for entry in watcher:
                    if entry is not None and entry.value:
                        record = json.loads(entry.value)
                        if check(record):
                            return record
        finally:
            await watcher.stop()
            await bus.close()

    return asyncio.run(watch())
