"""Progress reports a training job emits, so the server can stream them and the CLI can draw a
bar. Plain values only (no tensors), so a report can cross a process boundary as-is."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping


@dataclass(frozen=True)
class Progress:
    forget_id: str
    phase: str  # "baseline" | "train" | "eval" | "final" | "saved"
    attempt: int = 0  # 0-based index into the sweep
    step: int = 0
    max_steps: int = 0
    lr: float = 0.0
    losses: Mapping[str, float] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)  # probe metrics on eval steps
    passed: bool | None = None  # gate verdict on eval / final reports
    elapsed_s: float = 0.0  # since this attempt started

    @property
    def eta_s(self) -> float | None:
        """Seconds left in this attempt at its pace so far (its probe evaluations included);
        None before the first step. Not the job's: a missed gate starts another attempt."""
        if self.step <= 0 or self.max_steps <= 0 or self.elapsed_s <= 0:
            return None
        return self.elapsed_s / self.step * max(0, self.max_steps - self.step)


ProgressCallback = Callable[[Progress], None]
