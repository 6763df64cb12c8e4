#!/usr/bin/env bash
# Every check that needs a GPU, in one go on one GPU, in under 8 minutes:
#   1. the notebooks' `#| cuda` and `#| slow` cells (nbdev_test --flags "cuda slow", every page),
#   2. the released-size CUDA benchmark against transformers (bf16: the rows of the performance issue),
# writing logs, JSON and markdown tables to $GPU_OUT (default _artifacts/gpu/), where nbs/50_performance.ipynb
# shows them (copy the folder into the repository and commit it).
#
#   tools/gpu_check.sh                 # with the project's .venv (make setup TORCH_SPEC="torch==… --index-url …/cu…")
#   PY=python3 tools/gpu_check.sh      # with a Python that already has a CUDA torch and transformers
#   WHEELS=.whl PY=python3 tools/gpu_check.sh   # offline machine: install the missing pure-python packages from .whl/
# Each step has its own time limit, so one slow step cannot eat the others' time; a failed step is reported and the
# script goes on, exiting non-zero at the end if any step failed.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
OUT=${GPU_OUT:-_artifacts/gpu}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ -n "${WHEELS:-}" ]; then
  "$PY" -m pip install -q --no-index --no-deps --find-links "$WHEELS" "$WHEELS"/*.whl || exit 1
fi
"$PY" - <<'PY' || { echo "no CUDA device visible to $PY"; exit 1; }
import torch, sys
assert torch.cuda.is_available(), 'torch.cuda.is_available() is False'
print(torch.__version__, torch.cuda.get_device_name(0), file=sys.stderr)
PY
failed=()
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.log
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s): $*"
  local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "   exit $rc after $((SECONDS - t0)) s; log $OUT/$name.log"
  [ $rc -eq 0 ] || failed+=("$name")
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.csv" 2>&1 || true
B="$PY tools/benchmark.py --device cuda --size released --dtype bfloat16 --no-attentions --repeat 20 --warmup 3"
step notebooks 240 "$PY" -m nbdev.test --flags "cuda slow" --n_workers 4 --timing
step bench-mlm-b16 60 $B --models mlm --modes inference --batch-size 16 --compile --json "$OUT/mlm-b16.json" --markdown "$OUT/mlm-b16.md"
step bench-mlm-train-b8 45 $B --models mlm --modes train --batch-size 8 --json "$OUT/mlm-train-b8.json" --markdown "$OUT/mlm-train-b8.md"
step bench-image-b32 60 $B --models image-conv image-learned image-fourier --modes inference --batch-size 32 --json "$OUT/image-b32.json" --markdown "$OUT/image-b32.md"
step bench-mlm-131k 45 $B --models mlm --modes inference --batch-size 1 --seq-len 131072 --repeat 10 --json "$OUT/mlm-131k.json" --markdown "$OUT/mlm-131k.md"
"$PY" - "$OUT" <<'PY'
import pathlib, sys
out = pathlib.Path(sys.argv[1])
tables = [p.read_text() for p in sorted(out.glob('*.md')) if p.name != 'summary.md']
(out / 'summary.md').write_text('\n'.join(tables))
print(f'wrote {out}/summary.md ({len(tables)} tables)')
PY
if [ ${#failed[@]} -gt 0 ]; then echo "failed: ${failed[*]}"; exit 1; fi
echo "all GPU checks passed; results in $OUT"
