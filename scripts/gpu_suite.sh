#!/usr/bin/env bash
# `make test-gpu`: on a CUDA machine, every notebook runs ONCE, and the results and times go to $OUT (default
# ./gpu_suite_out/times.txt):
#
# 1. the unit tests (UNIT_TESTS=0 skips them), the CUDA-only ones included; the notebook runs are steps 2 and 3;
# 2. each solution notebook executed top to bottom in the `full` profile (scripts/execute_notebook.py: a cell
#    that raises fails it, as under nbval --nbval-lax), JOBS of them side by side on the one GPU (default 2:
#    small models leave it mostly idle), longest first; each executed copy is kept in $OUT, outputs and figures
#    included, with its profile, GPU and date, to be read and to build the site (`make book EXECUTED=gpu_suite_out`);
# 3. meanwhile, each student notebook in STUDENT_PROFILE (default `smoke`) through tests/test_notebooks.py: it runs
#    top to bottom with every exercise blank and each check falls back to minidiff's reference, on CUDA. What
#    `full` adds (longer training, the quality assertions) is the same code in both versions, run by step 2;
#    what the student version adds (the stubs, the fallbacks, every later cell on the reference) runs here.
#
# NOTEBOOKS="…" picks notebooks (default: all, solutions/*.ipynb notebooks/*.ipynb); each goes to step 2 or 3 by
# its folder. RUNNER=nbval runs the solutions under nbval instead (the same verdict, no copy kept).
#
# One call of a lent GPU machine may last 10 minutes, so there the suite is split into calls that share $OUT
# (measured side by side on one H100, NOTES.md: 05 464 s, 06 398 s, 04 172 s, 07 263 s, 01 157 s, 08 94 s,
# 03 77 s, 02 23 s), e.g.
#   NOTEBOOKS="solutions/05_training.ipynb solutions/03_schedules.ipynb solutions/02_closed_form.ipynb" UNIT_TESTS=0
#   NOTEBOOKS="solutions/06_sampling.ipynb solutions/04_unet.ipynb solutions/08_latent_diffusion.ipynb" UNIT_TESTS=0
#   NOTEBOOKS="solutions/07_guidance.ipynb solutions/01_forward_process.ipynb notebooks/*.ipynb"
# (about 8, 7 and 8 minutes with JOBS=2; the unit tests in the last call).
#
# Works on a bare box that has torch but not the Jupyter stack: wheels in .whl/ (made by
# scripts/fetch_gpu_wheels.sh) are installed into /tmp/minidiff-site first.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu_suite_out}
mkdir -p "$out"
out=$(cd "$out" && pwd)
python=${PYTHON:-python3}
jobs=${JOBS:-2}

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

now() { date +%s.%N; }
seconds_since() { "$python" -c "print(f'{$(now) - $1:.1f}')"; }
report() { printf '%-45s %-4s %7s s\n' "$1" "$2" "$3" | tee -a "$out/times.txt"; }

solutions=() students=()
for nb in ${NOTEBOOKS:-solutions/*.ipynb notebooks/*.ipynb}; do
  case "$(basename "$(dirname "$nb")")" in
    notebooks) students+=("$nb") ;;
    *) solutions+=("$nb") ;;
  esac
done
# Longest first (the order of the times above), so that the two slots end together.
longest_first() {
  for nb in "$@"; do
    case "$(basename "$nb")" in 05_*) r=1 ;; 06_*) r=2 ;; 07_*) r=3 ;; 04_*) r=4 ;; 01_*) r=5 ;; 08_*) r=6 ;;
                                03_*) r=7 ;; 02_*) r=8 ;; *) r=0 ;; esac   # a new notebook: first
    echo "$r $nb"
  done | sort -n | cut -d' ' -f2-
}

status=0
if [ "${UNIT_TESTS:-1}" = 1 ]; then
  start=$(now)
  if env -u MINIDIFF_PROFILE "$python" -m pytest -q -p no:cacheprovider -n 8 -m "not notebooks" --durations=15 tests \
      > "$out/unit_tests.log" 2>&1; then result=pass; else result=FAIL; status=1; fi
  report "tests/ (unit tests)" "$result" "$(seconds_since "$start")"
fi

# Step 3 in the background: the student notebooks, one pytest session (its executed copies in $out/students/).
student_pid=
if [ ${#students[@]} -gt 0 ]; then
  names=$(for nb in "${students[@]}"; do printf 'Test_notebooks_%s or ' "$(basename "$nb" .ipynb)"; done)
  (
    start=$(now)
    if MINIDIFF_PROFILE=${STUDENT_PROFILE:-smoke} "$python" -m pytest -q -p no:cacheprovider --durations=15 \
        --basetemp "$out/students" tests/test_notebooks.py -k "${names% or }" > "$out/students.log" 2>&1
    then result=pass; else result=FAIL; fi
    report "notebooks/ (${#students[@]}, ${STUDENT_PROFILE:-smoke}; students.log)" "$result" "$(seconds_since "$start")"
    [ "$result" = pass ]
  ) &
  student_pid=$!
fi

# Step 2: the solutions in `full`, $jobs at a time.
run_solution() {
  local nb=$1 name start result
  name=$(basename "$(dirname "$nb")")_$(basename "$nb" .ipynb)
  start=$(now)
  if [ "${RUNNER:-execute}" = nbval ]; then
    run=("$python" -m pytest -q -p no:cacheprovider --nbval-lax --nbval-current-env "$nb")
  else
    run=("$python" scripts/execute_notebook.py "$nb" "$out/$name.ipynb")
  fi
  if "${run[@]}" > "$out/$name.log" 2>&1; then result=pass; else result=FAIL; fi
  report "$nb" "$result" "$(seconds_since "$start")"
  [ "$result" = pass ]
}
# A subshell, so that `wait -n` waits for the solutions only (the student step is not its child).
(
  running=0 failed=0
  for nb in $(longest_first "${solutions[@]}"); do
    if [ "$running" -ge "$jobs" ]; then
      wait -n || failed=1
      running=$((running - 1))
    fi
    run_solution "$nb" &
    running=$((running + 1))
  done
  while [ "$running" -gt 0 ]; do
    wait -n || failed=1
    running=$((running - 1))
  done
  exit $failed
) || status=1
if [ -n "$student_pid" ]; then
  wait "$student_pid" || status=1
fi
exit $status
