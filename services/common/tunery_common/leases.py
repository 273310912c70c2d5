"""Leases on queued work (training jobs, eval runs): one worker at a time runs a record.

The work-queue message stays un-acked while the work runs; `in_progress()` heartbeats keep it
and renew a lease written into the record with compare-and-set. A redelivered message finds the
lease alive and is put back; once a killed worker's lease has run out, another worker takes over.
"""

import asyncio
import logging
import time
from typing import Any, Literal

from tunery_common.bus import RecordStore
from tunery_common.records import JobError, LeasedRecord, now

log = logging.getLogger(__name__)

NO_LEASE = {"lease_owner": None, "lease_until": None}


class Lease:
    def __init__(self, store: RecordStore, org: str, record_id: str, owner: str, lease_s: float):
        self.store = store
        self.org = org
        self.record_id = record_id
        self.owner = owner
        self.lease_s = lease_s

    async def claim(self, reset: dict[str, Any] | None = None) -> LeasedRecord | Literal["busy"] | None:
        """The record, now running under this lease; "busy" while another lease lives; None when
        done or paused."""
        outcome: dict[str, Any] = {}

        def take(rec: LeasedRecord):
            if rec.is_final or rec.status == "paused":  # resuming puts it on the queue again
                outcome["result"] = None
                return None
            if rec.lease_owner not in (None, self.owner) and (rec.lease_until or 0) > time.time():
                outcome["result"] = "busy"
                return None
            update = {
                "status": "running",
                "lease_owner": self.owner,
                "lease_until": time.time() + self.lease_s,
            }
            return rec.model_copy(update={**update, **(reset or {})})

        record = await self.store.mutate(self.org, self.record_id, take)
        if record is None:
            return None
        return outcome.get("result", record)

    async def keep_alive(self, msg, interval_s: float) -> None:
        """Runs until cancelled: heartbeats for the queue message and renewals of the lease."""

        def renew(rec: LeasedRecord):
            if rec.is_final or rec.lease_owner != self.owner:
                return None
            return rec.model_copy(update={"lease_until": time.time() + self.lease_s})

        while True:
            await asyncio.sleep(interval_s)
            try:
                await msg.in_progress()
                await self.store.mutate(self.org, self.record_id, renew)
            except Exception as exc:  # noqa: BLE001 - a missed beat is retried at the next one
                log.warning("heartbeat for %s failed: %s", self.record_id, exc)

    async def finish(self, update: dict[str, Any]) -> LeasedRecord | None:
        """Applies the final update and drops the lease, unless the record ended meanwhile (cancel)."""

        def apply(rec: LeasedRecord):
            if rec.is_final:
                return None
            return rec.model_copy(update={"finished_at": now(), **update, **NO_LEASE})

        record = await self.store.mutate(self.org, self.record_id, apply)
        return record if record is not None and record.status == update.get("status") else None

    async def fail(self, error: JobError) -> LeasedRecord | None:
        return await self.finish({"status": "failed", "error": error})

    async def release(self) -> LeasedRecord | None:
        """Back to the queue (the worker stops): another worker runs it from its start."""

        def back(rec: LeasedRecord):
            if rec.is_final:
                return None
            return rec.model_copy(update={"status": "queued", **NO_LEASE})

        record = await self.store.mutate(self.org, self.record_id, back)
        return record if record is not None and record.status == "queued" else None
