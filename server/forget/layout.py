"""The data directory's layout for the forget flow, in one place.

What lives under `--data-dir` (the ledger file, the adapter store, the worker's log, the guard's
key) and how an adapter's store directory is found. The server, the worker and the benchmarks
all name paths through `DataDir`. Imports nothing heavy: `app.py` wires the flow with it without
pulling in the trainer. Does not create or lock anything except the guard key (created once,
see keyfile.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from server.keyfile import guard_secret

LEDGER_FILE = "ledger.db"
ADAPTER_DIR = "adapters"
WORKER_LOG = "worker.log"


@dataclass(frozen=True)
class DataDir:
    root: Path

    @property
    def ledger(self) -> Path:
        return self.root / LEDGER_FILE

    @property
    def adapters(self) -> Path:
        """The adapter store: one directory per artifact, named by the ledger's AdapterRecord.path."""
        return self.root / ADAPTER_DIR

    @property
    def worker_log(self) -> Path:
        return self.root / WORKER_LOG

    def adapter_path(self, record_path: str) -> Path:
        """Where an adapter recorded with `record_path` lives (only its last component counts)."""
        return self.adapters / Path(record_path).name

    @staticmethod
    def partial_writes(artifact: Path) -> list[Path]:
        """Unfinished writes of `artifact` (the engine writes `.<name>.tmp-*` beside it, then renames)."""
        return sorted(artifact.parent.glob(f".{artifact.name}.tmp-*"))

    def guard_secret(self) -> bytes:
        """The guard's hashing and sealing key, shared by the server and its workers."""
        return guard_secret(self.root)
