"""Unlearning methods, one per file, behind a name registry.

Importing this package registers every built-in method. Methods only define losses; the trainer
owns the model, the optimiser, evaluation and checkpoints.
"""

from __future__ import annotations

from unlearn_engine.method_names import DEFAULT_METHOD
from unlearn_engine.methods import (counterfactual, grad_ascent, grad_diff, idk, npo,  # noqa: F401
                                   rmu, simnpo)
from unlearn_engine.methods.base import (METHODS, MethodConfig, TrainContext, UnknownMethodError,
                                         UnlearningMethod, get_method, register_method)
from unlearn_engine.methods.idk import IdkConfig
from unlearn_engine.methods.npo import NpoConfig
from unlearn_engine.methods.rmu import RmuConfig
from unlearn_engine.methods.simnpo import SimNpoConfig

__all__ = ["DEFAULT_METHOD", "METHODS", "IdkConfig", "MethodConfig", "NpoConfig", "RmuConfig",
           "SimNpoConfig", "TrainContext", "UnknownMethodError", "UnlearningMethod",
           "get_method", "register_method"]
