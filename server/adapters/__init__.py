"""The serving adapter stack: immutable versions, prepared off the hot path, swapped between
decode steps (see stack.py)."""
