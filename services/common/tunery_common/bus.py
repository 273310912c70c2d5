"""The NATS JetStream bus: KV records, the object store, events and work queues.

Every process opens one `Bus`; `ensure()` creates the streams and buckets idempotently, so any
process may start first.
"""

import asyncio
import base64
import contextlib
import hashlib
import io
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Generic, TypeVar

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    KeyValueConfig,
    ObjectStoreConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.object_store import OBJ_CHUNKS_PRE_TEMPLATE, OBJ_DIGEST_TEMPLATE, OBJ_STREAM_TEMPLATE
from pydantic import BaseModel
from tunery.events.v1 import events_pb2

from tunery_common.ids import new_id
from tunery_common.records import (
    EvalRecord,
    EvalRunRecord,
    FileRecord,
    JobRecord,
    ModelRecord,
)
from tunery_common.settings import NatsSettings

log = logging.getLogger(__name__)

EVENTS_STREAM = "TUNERY_EVENTS"
TRAIN_STREAM = "TUNERY_TRAIN"
TRAIN_SUBJECT = "tunery.work.train"
EVAL_RUN_STREAM = "TUNERY_EVAL_RUNS"
EVAL_RUN_SUBJECT = "tunery.work.evalrun"
ARTIFACTS_BUCKET = "tunery-artifacts"
OBJECT_FETCH_CHUNKS = 64  # chunks per pull request when reading an object: 8 MB of 128 KB chunks

R = TypeVar("R", bound=BaseModel)


class ConflictError(RuntimeError):
    """A compare-and-set update lost against another writer."""


class RecordStore(Generic[R]):
    """Pydantic records in one KV bucket, keyed `<org>.<id>`."""

    def __init__(self, kv, model: type[R]):
        self.kv = kv
        self.model = model

    @staticmethod
    def key(org: str, record_id: str) -> str:
        return f"{org}.{record_id}"

    @staticmethod
    def split_key(key: str) -> tuple[str, str]:
        """(org, id) of a key; ids hold no dots, so the last one separates them."""
        org, _, record_id = key.rpartition(".")
        return org, record_id

    async def get_with_revision(self, org: str, record_id: str) -> tuple[R, int] | None:
        try:
            entry = await self.kv.get(self.key(org, record_id))
        except (KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return None
        if not entry.value:
            return None
        return self.model.model_validate_json(entry.value), entry.revision

    async def get(self, org: str, record_id: str) -> R | None:
        found = await self.get_with_revision(org, record_id)
        return found[0] if found else None

    async def put(self, org: str, record_id: str, record: R) -> int:
        return await self.kv.put(self.key(org, record_id), record.model_dump_json().encode())

    async def create(self, org: str, record_id: str, record: R) -> int:
        return await self.kv.create(self.key(org, record_id), record.model_dump_json().encode())

    async def update(self, org: str, record_id: str, record: R, revision: int) -> int:
        try:
            return await self.kv.update(
                self.key(org, record_id), record.model_dump_json().encode(), last=revision
            )
        except KeyWrongLastSequenceError as exc:
            raise ConflictError(f"{record_id} changed concurrently") from exc

    async def mutate(self, org: str, record_id: str, change: Callable[[R], R | None]) -> R | None:
        """Read-modify-write with compare-and-set, retried on conflict. `change` returns None to skip."""
        while True:
            found = await self.get_with_revision(org, record_id)
            if found is None:
                return None
            record, revision = found
            updated = change(record.model_copy(deep=True))
            if updated is None:
                return record
            try:
                await self.update(org, record_id, updated, revision)
                return updated
            except ConflictError:
                continue

    async def delete(self, org: str, record_id: str) -> None:
        await self.kv.delete(self.key(org, record_id))

    async def list(self, org: str | None = None) -> list[R]:
        """All records of an org (or of every org), newest first, in one pass of a KV watcher."""
        watcher = await self.kv.watch(f"{org}.>" if org else ">", ignore_deletes=True)
        records = []
        try:
            async for entry in watcher:
                if entry is None:  # end of the current values
                    break
                if entry.value:
                    records.append(self.model.model_validate_json(entry.value))
        finally:
            await watcher.stop()
        records.sort(key=lambda r: (getattr(r, "created_at", 0), getattr(r, "id", "")), reverse=True)
        return records


def event_subject(event: events_pb2.Event) -> str:
    return f"tunery.events.{event.entity}.{event.entity_id}.{event.what}"


def make_event(
    entity: str,
    entity_id: str,
    org: str,
    what: str,
    message: str,
    *,
    level: str = "info",
    data: dict | None = None,
    type: str | None = None,
) -> events_pb2.Event:
    """An event; `type` is OpenAI's ("metrics" when it carries data, else "message")."""
    event = events_pb2.Event(
        id=new_id("ftevent"),
        entity=entity,
        entity_id=entity_id,
        org=org,
        type=type or ("metrics" if data is not None else "message"),
        what=what,
        level=level,
        message=message,
        created_at=int(time.time()),
    )
    if data is not None:
        event.data.update(data)
    return event


class Bus:
    def __init__(self, nc: NATS, js: JetStreamContext, settings: NatsSettings):
        self.nc = nc
        self.js = js
        self.settings = settings
        self.files: RecordStore[FileRecord]
        self.jobs: RecordStore[JobRecord]
        self.models: RecordStore[ModelRecord]
        self.eval_defs: RecordStore[EvalRecord]
        self.eval_runs: RecordStore[EvalRunRecord]
        self.objects = None

    @classmethod
    async def connect(cls, url: str, name: str, settings: NatsSettings | None = None) -> "Bus":
        """Connects (retrying until NATS answers or the timeout passes) and ensures the assets."""
        settings = settings or NatsSettings()

        async def on_disconnect():
            log.warning("NATS disconnected; reconnecting")

        async def on_reconnect():
            log.info("NATS reconnected")

        deadline = time.monotonic() + settings.connect_timeout_s
        while True:
            try:
                nc = await nats.connect(
                    url,
                    name=name,
                    connect_timeout=2,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    disconnected_cb=on_disconnect,
                    reconnected_cb=on_reconnect,
                )
                break
            except Exception as exc:  # noqa: BLE001 - any failure to reach NATS is retried
                if time.monotonic() > deadline:
                    raise ConnectionError(
                        f"cannot reach NATS at {url}: {exc}; start it or set TUNERY_NATS_URL"
                    ) from exc
                await asyncio.sleep(0.5)
        bus = cls(nc, nc.jetstream(), settings)
        await bus.wait_ready(max(1.0, deadline - time.monotonic()))
        await bus.ensure()
        return bus

    async def wait_ready(self, timeout: float) -> None:
        """Waits until JetStream answers: after a (re)start the server recovers its streams first."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                await self.js.account_info()
                return
            except (nats.errors.Error, TimeoutError) as exc:
                if time.monotonic() > deadline:
                    raise ConnectionError(f"JetStream is not answering: {exc}") from exc
                await asyncio.sleep(0.2)

    async def ensure(self) -> None:
        r = self.settings.replicas
        await self.js.add_stream(
            StreamConfig(
                name=EVENTS_STREAM,
                subjects=["tunery.events.>"],
                storage=StorageType.FILE,
                num_replicas=r,
                max_age=90 * 24 * 3600,
                duplicate_window=120,
            )
        )
        await self.js.add_stream(
            StreamConfig(
                name=TRAIN_STREAM,
                subjects=[TRAIN_SUBJECT],
                retention=RetentionPolicy.WORK_QUEUE,
                storage=StorageType.FILE,
                num_replicas=r,
            )
        )
        await self.js.add_stream(
            StreamConfig(
                name=EVAL_RUN_STREAM,
                subjects=[EVAL_RUN_SUBJECT],
                retention=RetentionPolicy.WORK_QUEUE,
                storage=StorageType.FILE,
                num_replicas=r,
            )
        )
        self.files = RecordStore(await self._kv("tunery-files"), FileRecord)
        self.jobs = RecordStore(await self._kv("tunery-jobs"), JobRecord)
        self.models = RecordStore(await self._kv("tunery-models"), ModelRecord)
        self.eval_defs = RecordStore(await self._kv("tunery-eval-defs"), EvalRecord)
        self.eval_runs = RecordStore(await self._kv("tunery-eval-runs"), EvalRunRecord)
        self.objects = await self.js.create_object_store(
            ARTIFACTS_BUCKET, config=ObjectStoreConfig(storage=StorageType.FILE, replicas=r)
        )

    async def _kv(self, bucket: str):
        return await self.js.create_key_value(
            config=KeyValueConfig(
                bucket=bucket, history=5, storage=StorageType.FILE, replicas=self.settings.replicas
            )
        )

    async def publish_event(self, event: events_pb2.Event) -> None:
        await self.js.publish(
            event_subject(event), event.SerializeToString(), headers={"Nats-Msg-Id": event.id}
        )

    async def read_events(self, entity: str, entity_id: str) -> list[events_pb2.Event]:
        """Every event of one entity, oldest first."""
        sub = await self.js.pull_subscribe(
            f"tunery.events.{entity}.{entity_id}.>",
            stream=EVENTS_STREAM,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE, inactive_threshold=30
            ),
        )
        try:
            remaining = (await sub.consumer_info()).num_pending
            events = []
            while remaining > 0:
                msgs = await sub.fetch(min(remaining, 256), timeout=5)
                for msg in msgs:
                    event = events_pb2.Event()
                    event.ParseFromString(msg.data)
                    events.append(event)
                remaining -= len(msgs)
            return events
        finally:
            await sub.unsubscribe()

    async def subscribe_events(self, subject: str, handler: Callable[[events_pb2.Event], Awaitable[None]]):
        """Live events on a subject (from now on), for progress displays and watchers."""

        async def on_msg(msg):
            event = events_pb2.Event()
            event.ParseFromString(msg.data)
            await handler(event)

        return await self.nc.subscribe(subject, cb=on_msg)

    async def put_object(self, name: str, data) -> None:
        await self.objects.put(name, data)

    async def get_object(self, name: str, writeinto=None) -> bytes | None:
        """The object's bytes, or None once they were written into `writeinto` (a binary file).
        FileNotFoundError if there is none; OSError if what was read does not match its digest."""
        try:
            info = await self.objects.get_info(name)
        except (NotFoundError, nats.js.errors.ObjectNotFoundError, nats.js.errors.ObjectDeletedError):
            raise FileNotFoundError(name) from None
        into = writeinto if writeinto is not None else io.BytesIO()
        digest = hashlib.sha256()
        async for chunks in self._object_chunks(info):
            for chunk in chunks:
                digest.update(chunk)
            await asyncio.to_thread(into.writelines, chunks)  # a file: its writes off the loop
        read_digest = base64.urlsafe_b64encode(digest.digest()).decode()
        if OBJ_DIGEST_TEMPLATE.format(digest=read_digest) != info.digest:
            raise OSError(f"object {name}: the bytes read do not match the stored digest; read it again")
        return None if writeinto is not None else into.getvalue()

    async def _object_chunks(self, info) -> AsyncIterator[list[bytes]]:
        """The object's chunks in order, a batch per pull request. nats-py's own `get` reads them
        through a push consumer, which the server paces: 0.82 s for 20 MB here, 0.12 s pulled."""
        if not info.chunks:
            return
        stream = OBJ_STREAM_TEMPLATE.format(bucket=ARTIFACTS_BUCKET)
        subject = OBJ_CHUNKS_PRE_TEMPLATE.format(bucket=ARTIFACTS_BUCKET, obj=info.nuid)
        config = ConsumerConfig(
            ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL, inactive_threshold=60.0
        )
        sub = await self.js.pull_subscribe(subject, stream=stream, config=config)
        try:
            read = 0
            while read < info.chunks:
                batch = await sub.fetch(min(OBJECT_FETCH_CHUNKS, info.chunks - read), timeout=30)
                read += len(batch)
                yield [message.data for message in batch]
        finally:
            await sub.unsubscribe()
            with contextlib.suppress(NotFoundError):  # else it goes once inactive for a minute
                await self.js.delete_consumer(stream, sub._consumer)

    async def delete_object(self, name: str) -> None:
        try:
            await self.objects.delete(name)
        except (NotFoundError, nats.js.errors.ObjectNotFoundError, nats.js.errors.ObjectDeletedError):
            pass

    async def close(self) -> None:
        if self.nc.is_connected or self.nc.is_reconnecting:
            await self.nc.drain()
