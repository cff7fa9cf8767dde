"""Generates the protobuf / gRPC Python stubs from `protos/` into `server/api/gen/`.

Generated code is build output (gitignored). `make proto` runs this module; `server.api` also runs
it on first import when the stubs are missing or older than the protos, so an editable install
works without a separate step. It does not touch the .proto files themselves.

protoc writes imports as `from lethe.v1 import x_pb2` (the proto package path); we rewrite them
to `server.api.gen.lethe.v1` so the stubs live inside our package instead of a top-level `lethe`.
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

API_DIR = Path(__file__).resolve().parent / "api"
PROTO_ROOT = API_DIR.parent.parent / "protos"
GEN_DIR = API_DIR / "gen"
_IMPORT_RE = re.compile(r"^from lethe\.v1 import ", re.MULTILINE)


def proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.glob("lethe/v1/*.proto"))


def is_stale() -> bool:
    """True when any proto is newer than its generated module (or that module is missing)."""
    for proto in proto_files():
        out = GEN_DIR / proto.relative_to(PROTO_ROOT).with_name(proto.stem + "_pb2.py")
        if not out.exists() or out.stat().st_mtime < proto.stat().st_mtime:
            return True
    return False


def generate() -> None:
    from grpc_tools import protoc  # build-time dependency; imported lazily
    import grpc_tools

    protos = proto_files()
    if not protos:
        raise RuntimeError(f"no .proto files under {PROTO_ROOT}")
    GEN_DIR.mkdir(parents=True, exist_ok=True)
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={GEN_DIR}",
        f"--pyi_out={GEN_DIR}",
        f"--grpc_python_out={GEN_DIR}",
        *[str(p) for p in protos],
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed; see its output above")
    for pkg in (GEN_DIR, GEN_DIR / "lethe", GEN_DIR / "lethe" / "v1"):
        (pkg / "__init__.py").touch()
    for module in (GEN_DIR / "lethe" / "v1").glob("*.py*"):
        text = module.read_text()
        fixed = _IMPORT_RE.sub("from server.api.gen.lethe.v1 import ", text)
        if fixed != text:
            module.write_text(fixed)
    logger.info("generated gRPC stubs for %d protos in %s", len(protos), GEN_DIR)


def main() -> int:
    logging.basicConfig(level=logging.INFO)
    generate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
