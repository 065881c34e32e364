#!/usr/bin/env bash
# Notebook 07's GPU measurements, in one go (≈ 8 minutes on one H200): train and ship the Shapes model
# conditioned on (shape, colour), while the guidance sweep measures the shipped digit model; then the
# same sweep on the new Shapes model. Results (JSON lines, logs, the shipped files) go to $OUT.
#     OUT=/tmp/g bash scripts/gpu_guidance.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu_guidance_out}
mkdir -p "$out"
python=${PYTHON:-python3}
if ! "$python" -c "import ipywidgets, mlxtend" 2>/dev/null; then      # a bare box: wheels from scripts/fetch_gpu_wheels.sh
  [ -d .whl ] || { echo "ipywidgets/mlxtend missing and no .whl/: run scripts/fetch_gpu_wheels.sh" >&2; exit 2; }
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/minidiff-site .whl/*.whl
  export PYTHONPATH=/tmp/minidiff-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
ship=minidiff/pretrained/checkpoints

# The run's own folder stays off $OUT (only 8 files come back from a device call); the shipped file is
# copied out the moment training ends, so a later timeout cannot lose it.
( "$python" -m minidiff train --recipe shapes_cond --out /tmp/shapes_cond_run --overwrite --device cuda --cuda-graph \
    --ship "$ship" > "$out/train_shapes_cond.log" 2>&1 && cp "$ship"/shapes_cond.pt "$ship"/manifest.json "$out"/ ) &
train=$!
"$python" benchmarks/guidance_sweep.py --n 1000 --draws 3 --json "$out/sweep_mnist.jsonl" \
  ${SWEEP_ARGS:-} > "$out/sweep_mnist.log" 2>&1 &
sweep=$!
wait $train && echo "shapes_cond trained" || { echo "shapes_cond training FAILED"; tail -20 "$out/train_shapes_cond.log"; }
"$python" benchmarks/guidance_sweep.py --model shapes_cond --n 1024 --draws 3 --scales ${SHAPES_SCALES:-0,1,1.5,2,3,5} \
  --variants ${SHAPES_VARIANTS:-plain,rescaled,interval} --json "$out/sweep_shapes.jsonl" > "$out/sweep_shapes.log" 2>&1 \
  && echo "shapes sweep done" || echo "shapes sweep FAILED"
wait $sweep && echo "mnist sweep done" || echo "mnist sweep FAILED"
for f in "$out"/*.log; do echo "== $f"; tail -n 8 "$f"; done
