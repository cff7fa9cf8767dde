"""The guard's hot path, compiled: an optional mypyc build of the per-token modules.

The scanner, the session and the side views run for every generated token; under CPython most
of their cost is interpreter overhead, not hashing. `make native` (or, by hand,
`python -m server.guard.native build`) compiles MODULES with mypyc: the same source, C extension
modules beside it, and each source's sha256 in BUILD_MANIFEST.

`use_source_if_stale()` runs first thing when the package is imported. It loads every module
of the build from its .py when any of these sources changed after the build (an edit without a
rebuild), or when LETHE_GUARD_NATIVE=0, so a stale build never runs. Without a build (no C
compiler), everything is plain Python and behaves the same; `STATUS` says which one runs.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Sequence

MODULES = ("server.guard.scanner", "server.guard.session", "server.guard.encodings",
           "server.guard.decoded", "server.guard.escapes", "server.guard.normalize")
ROOT = Path(__file__).resolve().parents[2]
GROUP = "server.guard.hotpath"  # the build's shared library: GROUP + "__mypyc"
BUILD_MANIFEST = Path(__file__).with_name("_native.json")
STATUS = "source (no build)"


def _source(module: str) -> Path:
    return ROOT / (module.replace(".", "/") + ".py")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class _SourceFinder(importlib.abc.MetaPathFinder):
    """Finds the listed modules as .py files, ahead of the compiled ones beside them."""

    def __init__(self, modules: Sequence[str]) -> None:
        self._paths = {m: str(_source(m)) for m in modules}

    def find_spec(self, name: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        file = self._paths.get(name)
        return importlib.util.spec_from_file_location(name, file) if file else None


def use_source_if_stale() -> str:
    """Decide, before any guard module is imported, whether the compiled build may run."""
    global STATUS
    try:
        built: dict[str, str] = json.loads(BUILD_MANIFEST.read_text())
    except (OSError, ValueError):
        if not compiled_files():
            return STATUS  # no build: the .py files are all there is
        built, STATUS = {m: "" for m in MODULES}, "source (an incomplete build: run `make native`)"
    else:
        if os.environ.get("LETHE_GUARD_NATIVE", "1") == "0":
            STATUS = "source (LETHE_GUARD_NATIVE=0)"
        elif any(not _source(m).exists() or _sha256(_source(m)) != d for m, d in built.items()):
            STATUS = "source (the compiled build is stale: run `make native`)"
        else:
            try:
                importlib.import_module(GROUP + "__mypyc")  # the build's shared library
            except ImportError as e:
                STATUS = f"source (the compiled build does not load: {e})"
            else:
                STATUS = "compiled"
                return STATUS
    if not any(isinstance(f, _SourceFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _SourceFinder(list(built)))
    return STATUS


def compiled_files() -> list[Path]:
    here = Path(__file__).parent
    return sorted(p for p in here.glob("*.so") if p.name.split(".")[0] in
                  {m.rsplit(".", 1)[1] for m in MODULES} or "__mypyc" in p.name)


def clean() -> None:
    for p in compiled_files():
        p.unlink()
    BUILD_MANIFEST.unlink(missing_ok=True)


def build() -> None:
    """Compile MODULES in place; on any failure the package stays plain Python."""
    from mypyc.build import mypycify  # build-time only (the `native` extra)
    from setuptools import setup

    clean()
    files = [str(_source(m).relative_to(ROOT)) for m in MODULES]
    digests = {m: _sha256(_source(m)) for m in MODULES}
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="lethe-native-") as tmp:
        os.chdir(ROOT)  # mypyc names modules by their path from here
        try:
            # Only these modules are type-checked and compiled; what they import stays Python.
            ext = mypycify(["--follow-imports=skip", "--ignore-missing-imports", *files],
                           opt_level="3", target_dir=tmp, group_name=GROUP)
            setup(name="lethe-guard-native", py_modules=[], ext_modules=ext,
                  script_args=["-q", "build_ext", "--inplace", "--build-temp", tmp])
        finally:
            os.chdir(cwd)
    BUILD_MANIFEST.write_text(json.dumps(digests, indent=1) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    cmd = (list(argv if argv is not None else sys.argv[1:]) or ["build"])[0]
    if cmd == "clean":
        clean()
    elif cmd == "build":
        build()
        for p in compiled_files():
            print(p.relative_to(ROOT))
    else:
        print("usage: python -m server.guard.native [build|clean]", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
