# Long-running checks that are not part of `pytest tests` (CI runs a short budget of each).
PYTHON ?= python
RUNS ?= 1000000
TARGET ?=

.PHONY: fuzz fuzz-list impairment soak

## make fuzz                      every fuzz target, $(RUNS) inputs each, one after another
## make fuzz TARGET=rtp RUNS=5000  one target
fuzz:
	PYTHONPATH=$(CURDIR) $(PYTHON) -m tests.fuzz.run $(if $(TARGET),--target $(TARGET),--all) --runs $(RUNS)

fuzz-list:
	PYTHONPATH=$(CURDIR) $(PYTHON) -m tests.fuzz.run --list

## the loss/jitter table in docs/reliability.md
impairment:
	PYTHONPATH=$(CURDIR) $(PYTHON) bench/impairment.py

## make soak MINUTES=10
MINUTES ?= 10
soak:
	PYTHONPATH=$(CURDIR) $(PYTHON) bench/soak.py --minutes $(MINUTES)
