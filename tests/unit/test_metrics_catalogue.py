"""The README's metric table and server/metrics.py describe the same series."""

from __future__ import annotations

import re
from pathlib import Path

from server.metrics import ServerMetrics

README = Path(__file__).resolve().parents[2] / "README.md"


def _registry() -> dict[str, tuple[str, tuple[str, ...]]]:
    out = {}
    for collector in ServerMetrics().registry._collector_to_names:  # noqa: SLF001 - names and labels
        name = collector._name + ("_total" if collector._type == "counter" else "")
        out[name] = (collector._type, tuple(collector._labelnames))
    return out


def _readme() -> dict[str, tuple[str, tuple[str, ...]]]:
    section = README.read_text().split("## Metrics\n", 1)[1].split("\n## ", 1)[0]
    out = {}
    for line in section.splitlines():
        m = re.match(r"\| `([a-z_]+)` \| (\w+) \|[^|]+\|([^|]*)\|", line)
        if m:
            labels = re.sub(r"\([^)]*\)", "", m.group(3))  # drop "(value, value)" lists
            out[m.group(1)] = (m.group(2), tuple(x.strip() for x in labels.split(",") if x.strip()))
    return out


def test_readme_lists_every_metric_with_its_type_and_labels() -> None:
    registry, readme = _registry(), _readme()
    assert len(registry) >= 35
    assert readme == registry


def test_every_label_set_is_bounded() -> None:
    unbounded = {"forget_id", "request_id", "prompt", "adapter_id", "text", "subject"}
    for name, (_type, labels) in _registry().items():
        assert not unbounded & set(labels), name
