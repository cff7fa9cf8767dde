"""The names of the built-in unlearning methods, importable without torch.

The registry (`unlearn_engine.methods.METHODS`) is the truth; this tuple lets a command line list
`--method` choices without importing the methods (and torch). A unit test keeps the two equal.
"""

from __future__ import annotations

METHOD_NAMES = ("counterfactual", "grad_ascent", "grad_diff", "idk", "npo", "rmu", "simnpo")
DEFAULT_METHOD = "npo"  # NPO + retain loss: best untuned in OU's TOFU reproduction
