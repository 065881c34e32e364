#!/usr/bin/env bash
# Run the unit tests (UNIT_TESTS=0 skips them) and every notebook (student and solution versions;
# NOTEBOOKS="…" picks some) under nbval in the `full` profile on a CUDA machine, and write the
# results and per-notebook times to $OUT (or ./gpu_suite_out). RUNNER=execute runs each notebook with
# scripts/execute_notebook.py instead of nbval (the same pass/fail: no cell may raise) and keeps the
# executed copy, outputs and figures included, in $OUT to be read and looked at (and to build the site
# from: `make book EXECUTED=gpu_suite_out`; each copy records its profile, GPU and date).
# Works on a bare box that has torch but not the Jupyter stack: wheels in .whl/ (made by
# scripts/fetch_gpu_wheels.sh) are installed into /tmp/minidiff-site first.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu_suite_out}
mkdir -p "$out"
python=${PYTHON:-python3}

if ! "$python" -c "import nbval, nbclient, ipykernel, ipywidgets, mlxtend" 2>/dev/null; then
  [ -d .whl ] || { echo "nbval/ipykernel missing and no .whl/: run scripts/fetch_gpu_wheels.sh" >&2; exit 2; }
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/minidiff-site .whl/*.whl
  export PYTHONPATH=/tmp/minidiff-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export MINIDIFF_PROFILE=full PYTHONUNBUFFERED=1
unset MPLBACKEND
# The machine and date head times.txt (each executed notebook also records them in its metadata).
"$python" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name())" \
  | sed "s/^/# $(date -u '+%Y-%m-%d %H:%M UTC') torch /" | tee -a "$out/times.txt"

status=0
# The unit tests first: the CUDA-only ones (CUDA graphs, devices, bf16) run only on a machine like this.
if [ "${UNIT_TESTS:-1}" = 1 ]; then
  if env -u MINIDIFF_PROFILE "$python" -m pytest -q -p no:cacheprovider -n 8 tests > "$out/unit_tests.log" 2>&1; then result=pass; else result=FAIL; status=1; fi
  printf '%-45s %-4s\n' "tests/ (unit tests)" "$result" | tee -a "$out/times.txt"
fi
for nb in ${NOTEBOOKS:-solutions/*.ipynb notebooks/*.ipynb}; do
  start=$(date +%s.%N)
  name=$(basename "$(dirname "$nb")")_$(basename "$nb" .ipynb)
  if [ "${RUNNER:-nbval}" = execute ]; then
    run=("$python" scripts/execute_notebook.py "$nb" "$out/$name.ipynb")
  else
    run=("$python" -m pytest -q -p no:cacheprovider --nbval-lax --nbval-current-env "$nb")
  fi
  if "${run[@]}" > "$out/$name.log" 2>&1; then result=pass; else result=FAIL; status=1; fi
  elapsed=$("$python" -c "print(f'{$(date +%s.%N) - $start:.1f}')")
  printf '%-45s %-4s %7s s\n' "$nb" "$result" "$elapsed" | tee -a "$out/times.txt"
done
exit $status
