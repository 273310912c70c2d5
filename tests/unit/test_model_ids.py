"""Fine-tuned and checkpoint model ids, their registry keys, and the downloadable adapter archive."""

import io
import json
import tarfile

import pytest
from tunery_common.adapters import (
    IncompleteAdapterError,
    adapter_object_name,
    export_filename,
    unpack_adapter,
    write_export_archive,
)
from tunery_common.records import (
    ModelRecord,
    checkpoint_model_id,
    fine_tuned_model_id,
    model_key_id,
    parse_model_id,
)

FT = fine_tuned_model_id("tiny-random-llama", "acme", "tickets", "ftjob-abc")


def test_checkpoint_ids_extend_the_fine_tuned_id():
    assert checkpoint_model_id(FT, 12) == "ft:tiny-random-llama:acme:tickets:ftjob-abc:ckpt-step-12"
    assert parse_model_id(FT) == ("ftjob-abc", None)
    assert parse_model_id(checkpoint_model_id(FT, 12)) == ("ftjob-abc", 12)
    assert parse_model_id("ft:tiny-random-llama:acme::ftjob-abc:ckpt-step-0") == ("ftjob-abc", 0)


@pytest.mark.parametrize(
    "model_id",
    [
        "tiny-random-llama",
        "ft:tiny-random-llama:acme:tickets",  # no job
        "ft:tiny-random-llama:acme:tickets:job-abc",  # not a job id
        "xx:tiny-random-llama:acme:tickets:ftjob-abc",
        f"{FT}:ckpt-step-",
        f"{FT}:ckpt-step-x",
        f"{FT}:ckpt-3",
        f"{FT}:ckpt-step-3:ckpt-step-4",
        "ft:tiny-random-llama:acme:tickets:ftjob-a.b",  # would be another KV key
        "ft:tiny-random-llama:acme:tickets:ftjob-*",
        "ft:tiny-random-llama:acme:tickets:ftjob-a b",
        "ft:tiny-random-llama:acme:tickets:ftjob-",
    ],
)
def test_other_ids_are_not_fine_tuned_models(model_id):
    assert parse_model_id(model_id) is None


def test_each_checkpoint_has_its_own_registry_key_and_adapter_object():
    final = ModelRecord(id=FT, org="acme", parent="tiny-random-llama", job_id="ftjob-abc", adapter_object="x")
    checkpoint = final.model_copy(update={"id": checkpoint_model_id(FT, 12), "checkpoint_step": 12})
    assert (final.key_id, checkpoint.key_id) == ("ftjob-abc", "ftjob-abc-ckpt-step-12")
    assert model_key_id(*parse_model_id(checkpoint.id)) == checkpoint.key_id
    assert model_key_id(*parse_model_id(final.id)) == final.key_id
    assert adapter_object_name("acme", checkpoint.key_id) == "adapters/acme/ftjob-abc-ckpt-step-12.tar"


def test_export_file_names_are_portable():
    assert export_filename(FT) == "ft-tiny-random-llama-acme-tickets-ftjob-abc.tar.gz"
    assert export_filename("ft:m:acme::ftjob-abc:ckpt-step-3") == "ft-m-acme-ftjob-abc-ckpt-step-3.tar.gz"


def _stored(files: dict[str, bytes]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def test_export_archive_names_the_base_model_and_keeps_only_the_adapter(tmp_path):
    config = {"peft_type": "LORA", "r": 8, "base_model_name_or_path": "/srv/cache/tiny-random-llama"}
    stored = _stored(
        {
            "adapter_config.json": json.dumps(config).encode(),
            "adapter_model.safetensors": b"weights",
            "README.md": b"---\nbase_model: /srv/cache/tiny-random-llama\n---\n",
        }
    )
    out = io.BytesIO()
    write_export_archive(stored, "tiny-random-llama", out)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue()), mode="r:gz") as tar:
        assert sorted(tar.getnames()) == ["adapter_config.json", "adapter_model.safetensors"]
        tar.extractall(tmp_path, filter="data")
    exported = json.loads((tmp_path / "adapter_config.json").read_text())
    assert exported == {**config, "base_model_name_or_path": "tiny-random-llama"}
    assert (tmp_path / "adapter_model.safetensors").read_bytes() == b"weights"


@pytest.mark.parametrize("missing", ["adapter_config.json", "adapter_model.safetensors"])
def test_export_refuses_an_incomplete_adapter(missing):
    files = {"adapter_config.json": b"{}", "adapter_model.safetensors": b"weights"}
    del files[missing]
    with pytest.raises(IncompleteAdapterError, match=missing):
        write_export_archive(_stored(files), "tiny-random-llama", io.BytesIO())


def test_stored_archive_round_trips(tmp_path):
    stored = _stored({"adapter_config.json": b"{}", "adapter_model.safetensors": b"w"})
    folder = unpack_adapter(stored.getvalue(), tmp_path / "adapter")
    assert sorted(p.name for p in folder.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
