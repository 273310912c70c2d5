"""Processes keep working when NATS restarts: the client reconnects and state survives on disk."""

import asyncio

from tunery_common.bus import Bus
from tunery_common.natsserver import free_port, start_nats
from tunery_common.records import FileRecord


async def test_bus_reconnects_after_a_nats_restart(tmp_path):
    port = free_port()
    store = tmp_path / "js"
    server = start_nats(port, store)
    bus = await Bus.connect(f"nats://127.0.0.1:{port}", "test")
    try:
        rec = FileRecord(id="file-1", org="acme", bytes=1, filename="a", purpose="fine-tune")
        await bus.files.create("acme", rec.id, rec)
        server.terminate()
        server.wait(10)
        server = start_nats(port, store)
        async with asyncio.timeout(30):
            while not bus.nc.is_connected:
                await asyncio.sleep(0.1)
        await bus.wait_ready(30)
        assert (await bus.files.get("acme", "file-1")).filename == "a"  # file-backed state survived
        rec2 = rec.model_copy(update={"id": "file-2"})
        await bus.files.create("acme", rec2.id, rec2)
        assert {r.id for r in await bus.files.list("acme")} == {"file-1", "file-2"}
    finally:
        await bus.close()
        server.terminate()
        server.wait(10)
