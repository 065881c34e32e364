#!/usr/bin/env bash
# Download, on a machine with PyPI, the wheels a bare CUDA box (Python 3.12, torch already there)
# needs to run the notebook suite (the Jupyter kernel stack, nbval, ipywidgets and mlxtend) and the
# benchmarks' peer, diffusers (its needs, e.g. huggingface-hub and safetensors, are there already; it ran
# there without importlib-metadata, which it lists but Python 3.12 does not need).
# Usage: bash scripts/fetch_gpu_wheels.sh [DIR=.whl] [PYTHON_VERSION=3.12]
set -euo pipefail
dir=${1:-.whl}
pyver=${2:-3.12}
mkdir -p "$dir"
packages=(
  nbval nbclient nbformat fastjsonschema jsonschema jsonschema-specifications referencing rpds-py
  jupyter-client jupyter-core ipykernel ipython ipython-pygments-lexers comm debugpy traitlets
  pyzmq tornado nest-asyncio platformdirs decorator jedi parso matplotlib-inline pexpect
  ptyprocess prompt-toolkit wcwidth stack-data executing asttokens pure-eval
  ipywidgets widgetsnbextension jupyterlab-widgets mlxtend
  diffusers
)
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux1_x86_64; do platforms+=(--platform "$p"); done
for name in "${packages[@]}"; do
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "$pyver" \
    --implementation cp "${platforms[@]}" -d "$dir" "$name"
done
ls "$dir" | wc -l | xargs echo "wheels in $dir:"
