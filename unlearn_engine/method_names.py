"""The names of the built-in unlearning methods, importable without torch.

The registry (`unlearn_engine.methods.METHODS`) is the truth; this tuple lets a command line list
`--method` choices without importing the methods (and torch). A unit test keeps the two equal.
"""

from __future__ import annotations

METHOD_NAMES = ("counterfactual", "grad_ascent", "grad_diff", "idk", "npo", "rmu", "simnpo")
DEFAULT_METHOD = "counterfactual"  # the only method with a fixed point at the never-seen level (docs/architecture.md#unlearning)
