"""Consuming a JetStream work queue: explicit ack, one message at a time.

A message stays un-acked while its work runs; the consumer keeps it with `in_progress()` and
JetStream redelivers it to another consumer after `ack_wait` when the worker goes silent.
"""

import asyncio
import logging
from collections.abc import AsyncIterator

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

log = logging.getLogger(__name__)


async def pull_work(
    js: JetStreamContext, stream: str, subject: str, durable: str, ack_wait_s: float, stop: asyncio.Event
) -> AsyncIterator[Msg]:
    """Messages of the queue, one at a time, until `stop` is set; the caller acks each one."""
    sub = await js.pull_subscribe(
        subject,
        durable=durable,
        stream=stream,
        config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=ack_wait_s, max_deliver=-1),
    )
    try:
        while not stop.is_set():
            try:
                msgs = await sub.fetch(1, timeout=1)
            except nats.errors.TimeoutError:
                continue
            except nats.errors.Error as exc:  # e.g. while NATS restarts
                log.warning("fetch from %s failed: %s", stream, exc)
                await asyncio.sleep(1)
                continue
            for msg in msgs:
                yield msg
    finally:
        # A pull subscription left open holds late replies to its fetches, and the connection's
        # drain at shutdown waits for them until it times out.
        await sub.unsubscribe()
