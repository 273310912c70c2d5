"""The bus against a real nats-server: records, CAS, events, objects, the work queue."""

import os

import pytest
from tunery_common import bus as bus_module
from tunery_common.bus import ARTIFACTS_BUCKET, Bus, ConflictError, make_event
from tunery_common.records import FileRecord


async def test_objects_are_read_whole_in_pulled_batches_leaving_no_consumer(nats_url, tmp_path, monkeypatch):
    monkeypatch.setattr(bus_module, "OBJECT_FETCH_CHUNKS", 2)  # 5 chunks: 3 pull requests
    bus = await Bus.connect(nats_url, "test")
    try:
        data = os.urandom(4 * 128 * 1024 + 7)  # 4 whole chunks and a short one
        await bus.put_object("objects/five-chunks", data)
        assert await bus.get_object("objects/five-chunks") == data
        with (tmp_path / "copy").open("wb") as out:
            assert await bus.get_object("objects/five-chunks", writeinto=out) is None
        assert (tmp_path / "copy").read_bytes() == data

        await bus.put_object("objects/empty", b"")
        assert await bus.get_object("objects/empty") == b""
        chunks = f"$O.{ARTIFACTS_BUCKET}.C.{(await bus.objects.get_info('objects/five-chunks')).nuid}"
        consumers = await bus.js.consumers_info(f"OBJ_{ARTIFACTS_BUCKET}")
        assert not [c for c in consumers if c.config.filter_subject == chunks]  # gone with each read
        await bus.delete_object("objects/five-chunks")
        with pytest.raises(FileNotFoundError):
            await bus.get_object("objects/five-chunks")
    finally:
        await bus.close()


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
