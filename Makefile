# deconvseg — `make run` serves the shipped weights, `make test` runs the tests.
# Both create .venv on first use. torch/torchvision ranges in pyproject.toml resolve to
# the wheels already on these machines.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint train evaluate clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m app

test: $(STAMP)
	$(PY) -m ruff check app model tests bench
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check app model tests bench

train: $(STAMP)
	$(PY) -m model.train --epochs 16 --epoch-size 3072 --val-images 64 --out weights/model.pt

evaluate: $(STAMP)
	$(PY) -m model.evaluate weights/model.pt --images 200

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
