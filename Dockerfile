# syntax=docker/dockerfile:1
# deconvseg service image. Installs with `make install` (the command `make run` uses) and starts
# `python -m app` (the entry point `make run` starts), so CI's run of those covers this path.
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
# CPU wheels by default; e.g. --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_EXTRA_INDEX_URL=${TORCH_INDEX} \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# make is only for `make install`; it is not pinned so Debian security updates apply.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /srv/deconvseg
COPY pyproject.toml Makefile README.md ./
COPY app ./app
COPY model ./model
RUN make install PYTHON=python

FROM python:${PYTHON_VERSION}-slim AS runtime
RUN useradd --create-home --uid 10001 deconvseg
WORKDIR /srv/deconvseg
COPY --from=build --chown=deconvseg:deconvseg /srv/deconvseg /srv/deconvseg
COPY --chown=deconvseg:deconvseg weights ./weights
USER 10001:10001
ENV PATH=/srv/deconvseg/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DECONVSEG_HOST=0.0.0.0 \
    DECONVSEG_PORT=8000 \
    DECONVSEG_CHECKPOINT=/srv/deconvseg/weights/model.pt
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2).status != 200)"]
CMD ["python", "-m", "app"]
