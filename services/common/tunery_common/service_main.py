"""The life of a service process: connect the bus, serve gRPC, stop cleanly on SIGTERM."""

import asyncio
import gc
import logging
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack

from tunery_common.bus import Bus
from tunery_common.grpc_server import Registration, shutdown_event, start_grpc_server
from tunery_common.logs import setup_logging
from tunery_common.settings import CommonSettings

# Builds the servicers; may start background work whose cleanup it pushes onto the stack.
Setup = Callable[[Bus, AsyncExitStack], Awaitable[list[Registration]]]


async def run_service(name: str, settings: CommonSettings, port: int, setup: Setup) -> None:
    log = logging.getLogger(name)
    stop = shutdown_event()
    async with AsyncExitStack() as stack:
        bus = await Bus.connect(settings.nats_url, name)
        stack.push_async_callback(bus.close)
        registrations = await setup(bus, stack)
        # What start-up built lives as long as the process: out of the collector's sight, a
        # full collection no longer walks it (a pause of tens of ms with a model loaded).
        gc.freeze()
        server = await start_grpc_server(port, registrations)
        stack.push_async_callback(server.stop)
        log.info("%s ready on port %d", name, server.port)
        await stop.wait()
        log.info("%s stopping", name)


def service_main(name: str, settings: CommonSettings, port: int, setup: Setup) -> None:
    setup_logging(name, settings.log_level, settings.log_json)
    asyncio.run(run_service(name, settings, port, setup))
