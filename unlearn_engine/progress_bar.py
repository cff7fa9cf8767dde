"""The terminal progress bar the engine's commands draw (`lethe unlearn`, `lethe demo build`).

One rich bar layout, with elapsed time and an ETA, shared so every long command looks the same.
Only for command lines: the engine itself reports through plain callbacks (progress.py) and
never draws.
"""

from __future__ import annotations

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def progress_bar() -> Progress:
    """A bar whose tasks carry an `info` field shown beside it (add_task(..., info=""))."""
    return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                    TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
