"""Benchmarks of the compiled core: `python -m pytest bench -q --benchmark-only`.

`bench/` is not a package (the repository's pytest runs with --import-mode=importlib), so make its
`workloads` module importable for the benchmark files and for `compare_core.py` alike.
"""

import sys
from pathlib import Path

BENCH_DIR = str(Path(__file__).resolve().parent)
if BENCH_DIR not in sys.path:
    sys.path.insert(0, BENCH_DIR)
