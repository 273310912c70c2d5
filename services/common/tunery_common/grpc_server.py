"""gRPC server plumbing shared by the services: health, reflection, graceful shutdown."""

import asyncio
import logging
import signal
from collections.abc import Callable, Iterable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

log = logging.getLogger(__name__)

# (add_XServicer_to_server, servicer instance, full service name)
Registration = tuple[Callable[[Any, grpc.aio.Server], None], Any, str]


class GrpcServer:
    def __init__(self, server: grpc.aio.Server, port: int, health_servicer: health.aio.HealthServicer):
        self.server = server
        self.port = port
        self.health = health_servicer

    async def stop(self, grace: float = 5.0) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


async def start_grpc_server(
    port: int, registrations: Iterable[Registration], host: str = "[::]"
) -> GrpcServer:
    """Starts a server on `port` (0 picks a free one) serving health and reflection too."""
    server = grpc.aio.server(
        options=[("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME]
    for add, servicer, name in registrations:
        add(servicer, server)
        names.append(name)
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(names, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    log.info("gRPC listening on port %d", bound)
    return GrpcServer(server, bound, health_servicer)


def shutdown_event() -> asyncio.Event:
    """An event set on SIGINT/SIGTERM, for a graceful stop of the running loop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def check_health(addr: str, timeout: float = 1.0) -> bool:
    """True when the server at `addr` reports SERVING."""
    async with grpc.aio.insecure_channel(addr) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout
            )
        except grpc.aio.AioRpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING
