"""Scaffolding for tests and benchmarks, not shipped: the toy model (toy_model.py), and the
semantic guard's calibration (calibrate.py) with its demo-corpus pairs (calibration_pairs.py)."""
