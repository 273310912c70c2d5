"""Adapter archives: the tar of a PEFT folder kept in the object store (one per fine-tuned model
or checkpoint), and the self-contained .tar.gz that users download.

No torch here: the gateway builds the download.
"""

import io
import json
import re
import tarfile
from pathlib import Path
from typing import IO

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
EXPORT_MEDIA_TYPE = "application/gzip"


class IncompleteAdapterError(ValueError):
    """A stored archive lacks a file that PEFT (or vLLM) needs to load the adapter."""


def adapter_object_name(org: str, key_id: str) -> str:
    """Where a model's adapter lives; `key_id` is its models-bucket id (`records.model_key_id`)."""
    return f"adapters/{org}/{key_id}.tar"


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


def export_filename(model_id: str) -> str:
    """A file name for the download: model ids hold colons, which some file systems refuse."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", model_id).strip("-") + ".tar.gz"


def write_export_archive(stored: IO[bytes], base_model: str, out: IO[bytes]) -> None:
    """Writes the downloadable adapter: a .tar.gz whose files (no enclosing folder) form a PEFT
    folder that `PeftModel.from_pretrained` and vLLM's LoRA loader read.

    Only the two files those loaders need are kept: the trainer's folder may hold a README whose
    metadata names a path on the training machine. `base_model_name_or_path` is set to the
    Tunery base model id, which `ensure_base_model` (and `tunery models export --merged`) resolve.
    """
    with tarfile.open(fileobj=stored, mode="r:") as source:
        members = {m.name: m for m in source.getmembers() if m.isfile()}
        missing = [name for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS) if name not in members]
        if missing:
            raise IncompleteAdapterError(f"the stored adapter lacks {', '.join(missing)}")
        config = json.loads(source.extractfile(members[ADAPTER_CONFIG]).read())
        config["base_model_name_or_path"] = base_model
        config_bytes = json.dumps(config, indent=2, sort_keys=True).encode()
        # The weights hardly compress (floats): the fastest level keeps large downloads quick.
        with tarfile.open(fileobj=out, mode="w:gz", compresslevel=1) as archive:
            info = _file_info(ADAPTER_CONFIG, len(config_bytes), members[ADAPTER_CONFIG].mtime)
            archive.addfile(info, io.BytesIO(config_bytes))
            weights = members[ADAPTER_WEIGHTS]
            info = _file_info(ADAPTER_WEIGHTS, weights.size, weights.mtime)
            archive.addfile(info, source.extractfile(weights))


def _file_info(name: str, size: int, mtime: float) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, int(mtime), 0o644
    return info
