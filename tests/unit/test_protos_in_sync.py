"""The committed gRPC stubs are what `make protos` generates from the .proto files."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ROOT / "services" / "common"


def test_generated_stubs_match_protos(tmp_path):
    protos = sorted(str(p.relative_to(ROOT / "protos")) for p in (ROOT / "protos").rglob("*.proto"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{ROOT / 'protos'}",
            f"--python_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            *protos,
        ],
        check=True,
    )
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.py*") if p.suffix in {".py", ".pyi"})
    assert fresh, "protoc generated nothing"
    stale = [str(rel) for rel in fresh if (GENERATED / rel).read_text() != (tmp_path / rel).read_text()]
    assert not stale, f"stubs differ from the .proto files; run `make protos`: {stale}"
