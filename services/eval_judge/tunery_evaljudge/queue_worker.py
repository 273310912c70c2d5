"""The queue side of an eval-run worker: pull a work queue, claim each record under a
lease, heartbeat while it runs, and end it (requeued, canceled, failed or done).

As with training jobs, the message stays un-acked while the work goes: `in_progress()` heartbeats
keep it, a lease in the record (compare-and-set) keeps a redelivered message from starting a
second run, and a killed worker's record is redelivered after `ack_wait` and run again from the
start (greedy decoding gives the same answers).
"""

import asyncio
import logging
from typing import Any, ClassVar

from tunery.inference.v1 import inference_pb2_grpc
from tunery_common.bus import Bus, RecordStore, make_event
from tunery_common.ids import new_id
from tunery_common.leases import Lease
from tunery_common.records import JobError, LeasedRecord
from tunery_common.workqueue import pull_work

from tunery_evaljudge.settings import EvalJudgeSettings

log = logging.getLogger(__name__)


class EvalFailed(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.error = JobError(code=code, message=message)


class Interrupted(Exception):
    """The worker is shutting down: the record goes back to the queue."""


class Canceled(Exception):
    """The record was cancelled while it ran."""


class QueueWorker:
    """Subclasses name their queue and records and implement `_run`."""

    stream: ClassVar[str]
    subject: ClassVar[str]
    durable: ClassVar[str]
    entity: ClassVar[str]  # of the events: `tunery.events.<entity>.<id>.<what>`
    label: ClassVar[str]  # in messages: "quick eval", "eval run"
    reset: ClassVar[dict[str, Any]]  # record fields a (re)started run begins from

    def __init__(self, bus: Bus, inference: inference_pb2_grpc.InferenceStub, settings: EvalJudgeSettings):
        self.bus = bus
        self.inference = inference
        self.settings = settings
        self.worker_id = new_id("worker")

    def records(self) -> RecordStore:
        raise NotImplementedError

    async def _run(self, record: LeasedRecord, lease: Lease, stop: asyncio.Event) -> None:
        raise NotImplementedError

    async def run(self, stop: asyncio.Event) -> None:
        log.info("worker %s waiting for %ss", self.worker_id, self.label)
        async for msg in pull_work(
            self.bus.js, self.stream, self.subject, self.durable, self.settings.ack_wait_s, stop
        ):
            await self.handle(msg, stop)

    async def handle(self, msg, stop: asyncio.Event) -> None:
        org, record_id = RecordStore.split_key(msg.data.decode())
        lease = Lease(self.records(), org, record_id, self.worker_id, self.settings.ack_wait_s)
        claimed = await lease.claim(reset=self.reset)
        if claimed == "busy":  # another worker's lease is alive
            await msg.nak(delay=self.settings.ack_wait_s)
            return
        if claimed is None:  # gone, finished or cancelled
            await msg.ack()
            return
        record: LeasedRecord = claimed
        heartbeat = asyncio.create_task(lease.keep_alive(msg, self.settings.heartbeat_s))
        try:
            await self._run(record, lease, stop)
        except Interrupted:
            if await lease.release():
                await self._event(
                    record, "requeued", f"Worker shutting down; {self.label} returned to the queue"
                )
            await msg.nak()
            return
        except Canceled:
            await self._event(record, "canceled", f"{self.label.capitalize()} canceled")
        except EvalFailed as exc:
            await self._fail(record, lease, exc.error)
        except Exception as exc:  # noqa: BLE001 - any failure ends the record with its reason
            log.exception("%s %s failed", self.label, record.id)
            await self._fail(
                record, lease, JobError(code="eval_failed", message=f"{type(exc).__name__}: {exc}")
            )
        finally:
            heartbeat.cancel()
        # Acknowledged and confirmed: a finished record is never redelivered.
        await msg.ack_sync()

    async def _fail(self, record: LeasedRecord, lease: Lease, error: JobError) -> None:
        if await lease.fail(error):
            await self._event(record, "failed", error.message, level="error")

    async def _event(self, record: LeasedRecord, what: str, message: str, **kwargs) -> None:
        await self.bus.publish_event(make_event(self.entity, record.id, record.org, what, message, **kwargs))
