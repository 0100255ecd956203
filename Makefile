# deconvseg — `make run` serves the shipped weights, `make test` runs the tests.
# Both create .venv on first use. The torch/torchvision ranges in pyproject.toml resolve to the
# wheels already on these machines; the Dockerfile runs the same `make install`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RUNTIME := $(VENV)/.installed-runtime
DEV := $(VENV)/.installed-dev

.PHONY: install run test lint train evaluate bench clean mutation

$(RUNTIME): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(DEV): $(RUNTIME)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(RUNTIME)

run: install
	$(PY) -m app

test: $(DEV)
	$(PY) -m ruff check app model tests bench
	$(PY) -m mypy
	$(PY) -m pytest -q

lint: $(DEV)
	$(PY) -m ruff check app model tests bench
	$(PY) -m mypy

# The command that trained weights/model.pt (see README, "Model card").
train: install
	$(PY) -m model.train --bf16 --threads 1 --workers 1 --epochs 30 --epoch-size 6144 --val-images 64 \
		--widths 16 32 64 96 128 --net stem_stride=2 --out weights/model.pt

evaluate: install
	$(PY) -m model.evaluate weights/model.pt --images 200

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

bench: $(DEV)
	$(PY) -m bench

# Mutation testing of the core modules ([tool.mutmut] in pyproject.toml; tests/MUTATION.md).
# Not in `make test`: about 45 minutes on 2 cores. Eight children, because most of a mutant's
# time is its tests waiting (batch delays, deadlines), not computing.
mutation: $(DEV)
	OMP_NUM_THREADS=1 DECONVSEG_THREADS=1 $(PY) -m mutmut run --max-children 8
	$(PY) -m tests.support.mutation
