"""Adapter archives in the object store: a tar of the PEFT folder, one per fine-tuned model."""

import io
import tarfile
from pathlib import Path


def adapter_object_name(org: str, job_id: str) -> str:
    return f"adapters/{org}/{job_id}.tar"


def pack_adapter(adapter_dir: Path) -> bytes:
    """A tar of the PEFT folder (adapter_config.json + adapter_model.safetensors)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path in sorted(adapter_dir.iterdir()):
            if path.is_file():
                tar.add(path, arcname=path.name)
    return buf.getvalue()


def unpack_adapter(data: bytes, target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        tar.extractall(target, filter="data")
    return target
