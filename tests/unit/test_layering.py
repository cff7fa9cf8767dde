"""Generated protobuf types stay at the edge: only the servicers, the API package, the client,
the CLI and the app's wiring may import them (read from the source, so nothing is imported)."""

from __future__ import annotations

import ast
from pathlib import Path

SERVER = Path(__file__).resolve().parents[2] / "server"
EDGE = ("servicers/", "api/", "http/", "client.py", "cli.py", "codegen.py", "app.py", "healthcheck.py")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _is_protobuf(name: str) -> bool:
    return name == "server.api" or name.startswith(("server.api.", "google.protobuf")) or "_pb2" in name


def test_only_the_edge_imports_generated_protobuf_code() -> None:
    offenders = []
    for path in sorted(SERVER.rglob("*.py")):
        rel = path.relative_to(SERVER).as_posix()
        if rel.startswith(EDGE):
            continue
        hits = sorted(n for n in _imports(path) if _is_protobuf(n))
        if hits:
            offenders.append(f"server/{rel}: {', '.join(hits)}")
    assert not offenders, "protobuf outside the edge:\n" + "\n".join(offenders)
