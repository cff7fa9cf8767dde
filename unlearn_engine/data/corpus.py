"""Load a configured corpus (JSONL of QA pairs or texts) into ``Example`` objects.

Accepted lines: ``{"question", "answer", [fact], [perturbed], [person], [split]}`` or
``{"text", [person], [split]}`` — the demo corpus format, which is a superset. Unknown keys are
ignored. It does not match or filter; see ``near_duplicates`` and the set builders.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from unlearn_engine.data.records import Example


def load_corpus(path: str | Path) -> tuple[Example, ...]:
    """Every record of a JSONL file, in order. Raises ``ValueError`` naming the bad line."""
    out: list[Example] = []
    with Path(path).open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                out.append(Example.from_record(json.loads(line)))
            except (ValueError, TypeError, AttributeError) as err:
                raise ValueError(f"{path}:{lineno}: bad record ({err})") from err
    return tuple(out)


def save_examples(examples: Iterable[Example], path: str | Path) -> Path:
    """Write examples back as JSONL (the format ``load_corpus`` reads)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for ex in examples:
            fh.write(json.dumps(ex.to_record(), ensure_ascii=False) + "\n")
    return path


def as_examples(records: Iterable[object], source: str = "corpus") -> tuple[Example, ...]:
    """Examples from a mix of ``Example`` objects, demo records and mappings."""
    return tuple(r if isinstance(r, Example) else Example.from_record(r, source)
                 for r in records)
