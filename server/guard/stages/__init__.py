"""Guard stages; importing this package registers them (exact, entity, semantic)."""

from server.guard.stages import entity, exact, semantic  # noqa: F401  (registration)
from server.guard.stages.base import (Derived, OutputFilter, SessionFlags, StageEnv,
                                      register_stage, stage_class, stage_names)

__all__ = ["Derived", "OutputFilter", "SessionFlags", "StageEnv", "register_stage", "stage_class",
           "stage_names"]
