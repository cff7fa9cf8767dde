"""The server's layering, read from the source (nothing is imported): generated protobuf types
stay at the edge (the servicers, the API package, the client, the CLI and the app's wiring), and
no two parts of server/ (a sub-package or a top-level module) import each other in a loop."""

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


def _part(rel: str) -> str:
    """server/forget/worker.py -> "forget"; server/app.py -> "app"."""
    return rel.split("/", 1)[0].removesuffix(".py")


def test_no_import_loops_between_parts_of_the_server() -> None:
    parts = {p.name.removesuffix(".py") for p in SERVER.iterdir() if p.suffix == ".py" or p.is_dir()}
    graph: dict[str, set[str]] = {}
    for path in SERVER.rglob("*.py"):
        rel = path.relative_to(SERVER).as_posix()
        if rel.startswith("api/gen/"):
            continue
        src = _part(rel)
        for name in _imports(path):
            bits = name.split(".")
            if bits[0] == "server" and len(bits) > 1 and bits[1] in parts and bits[1] != src:
                graph.setdefault(src, set()).add(bits[1])

    def loop_from(node: str, trail: list[str]) -> list[str] | None:
        for nxt in sorted(graph.get(node, ())):
            if nxt in trail:
                return trail[trail.index(nxt):] + [nxt]
            found = loop_from(nxt, trail + [nxt])
            if found:
                return found
        return None

    for start in sorted(graph):
        loop = loop_from(start, [start])
        assert loop is None, "import loop: " + " -> ".join(loop)
