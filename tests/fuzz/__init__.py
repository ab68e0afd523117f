"""Fuzz targets (atheris, coverage-guided) for every parser that faces the network.

`registry.py` holds the one list of targets; `run.py` is the command line (`python -m tests.fuzz.run`).
"""
