"""The bus against a real nats-server: records, CAS, events, objects, the work queue."""

import pytest
from tunery_common.bus import Bus, ConflictError, make_event
from tunery_common.records import FileRecord


async def test_records_events_and_objects(nats_url):
    bus = await Bus.connect(nats_url, "test")
    try:
        rec = FileRecord(id="file-1", org="acme", bytes=3, filename="a.jsonl", purpose="fine-tune")
        rev = await bus.files.create("acme", rec.id, rec)
        assert (await bus.files.get("acme", "file-1")).filename == "a.jsonl"
        assert await bus.files.get("other", "file-1") is None
        assert [r.id for r in await bus.files.list("acme")] == ["file-1"]
        assert await bus.files.list("other") == []

        await bus.files.update("acme", rec.id, rec.model_copy(update={"bytes": 4}), rev)
        with pytest.raises(ConflictError):
            await bus.files.update("acme", rec.id, rec, rev)

        for i in range(3):
            await bus.publish_event(
                make_event("job", "ftjob-x", "acme", "metrics", f"step {i}", data={"step": i})
            )
        await bus.publish_event(make_event("job", "ftjob-y", "acme", "started", "other job"))
        events = await bus.read_events("job", "ftjob-x")
        assert [e.data["step"] for e in events] == [0, 1, 2]
        assert all(e.type == "metrics" for e in events)

        await bus.put_object("files/acme/file-1", b"x" * 300_000)
        assert await bus.get_object("files/acme/file-1") == b"x" * 300_000
        with pytest.raises(FileNotFoundError):
            await bus.get_object("files/acme/none")
    finally:
        await bus.close()
