#!/usr/bin/env bash
# The GPU check, in one call of at most 8 minutes on a fresh CUDA machine with this repository:
#   1 install   the README's set-up (scripts/setup.sh), reusing what is there; on a machine with no package
#               registry, the wheels in .whl/ (made beforehand by scripts/device_wheels.sh) over its own torch
#   2 gpu       what torch sees (name, memory, versions)
#   3 tests     the tests marked cuda: bf16 autocast, channels-last, out of memory -> smaller batch -> CPU under a
#               forced memory cap, SAM 2 on CUDA with random weights
#   4 bench     oct-wsss bench on the GPU: paper-size AGM per B-scan, the CAM stage against the grad-cam package,
#               the student on a 49-B-scan volume, SAM 2 embedding and prompt
#   5-6 train   single-GPU torchrun of the AGM (paper size) and student recipes for a fixed number of steps
# Writes $OUT/device_check.json (every step's command, exit status and seconds, with the figures) and
# $OUT/device_check.log. --dry-run announces every step and runs none (no CUDA needed).
#   OUT=/tmp/check bash scripts/device_check.sh [--dry-run]
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0; [ "${1:-}" = "--dry-run" ] && DRY=1
OUT="${OUT:-$PWD/device-check-out}"; mkdir -p "$OUT"
LOG="$OUT/device_check.log"; STEPS="$OUT/steps.tsv"; : >"$LOG"; : >"$STEPS"
BUDGET_S="${DEVICE_CHECK_BUDGET_S:-480}"; START=$(date +%s)
SITE=/tmp/oct-wsss-site
export PYTHONUNBUFFERED=1

say() { echo "device_check: $*" | tee -a "$LOG"; }

# step NAME LIMIT_S COMMAND...: run COMMAND with a time limit (never past the budget), log it, record it.
step() {
    local name=$1 limit=$2; shift 2
    local left=$(( BUDGET_S - ($(date +%s) - START) ))
    [ "$limit" -gt "$left" ] && limit=$left
    say "step $name (limit ${limit} s): $*"
    if [ "$DRY" = 1 ]; then printf '%s\t%s\t%s\t%s\n' "$name" "dry-run" 0 "$*" >>"$STEPS"; return 0; fi
    if [ "$limit" -le 0 ]; then printf '%s\t%s\t%s\t%s\n' "$name" "no-time" 0 "$*" >>"$STEPS"; return 0; fi
    local t0=$(date +%s) rc
    timeout --kill-after=10 "$limit" "$@" >>"$LOG" 2>&1; rc=$?
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" "$*" >>"$STEPS"
    say "step $name: exit $rc after $(( $(date +%s) - t0 )) s"
}

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    # the lent GPU machines reach no registry: their own torch, plus these wheels, plus src on the path
    PY=python3; export PYTHONPATH="$SITE:$PWD/src"
    step install 120 python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" .whl/*.whl
elif [ -x .venv/bin/python ] && .venv/bin/python -c "import torch, oct_wsss" 2>/dev/null; then
    PY=.venv/bin/python
    step install 10 echo "reusing .venv"
else
    PY=.venv/bin/python
    step install 300 bash scripts/setup.sh
fi

GPU_INFO="import json, torch; p = torch.cuda.get_device_properties(0); print('GPU', json.dumps({'name': p.name, \
'memory_gib': round(p.total_memory / 2**30, 1), 'torch': torch.__version__, 'cuda': torch.version.cuda}))"
step gpu 30 "$PY" -c "$GPU_INFO"
step tests 150 "$PY" -m pytest -m cuda tests/test_cuda.py -q -p no:cacheprovider -o addopts= --timeout=140 \
    --junitxml="$OUT/cuda-tests.xml"
step bench 200 "$PY" -m oct_wsss.cli bench --device cuda --json "$OUT/bench.json"
step train-agm 60 "$PY" -m torch.distributed.run --nproc_per_node 1 scripts/train_throughput.py \
    training/agm-synth-full.yaml --steps 20 --device cuda --json "$OUT/train-agm.json"
step train-student 45 "$PY" -m torch.distributed.run --nproc_per_node 1 scripts/train_throughput.py \
    training/student-synth.yaml --steps 50 --device cuda --json "$OUT/train-student.json"

python3 - "$OUT" "$DRY" "$(( $(date +%s) - START ))" <<'EOF'
import json, re, sys
from pathlib import Path
out, dry, seconds = Path(sys.argv[1]), sys.argv[2] == "1", int(sys.argv[3])
steps = [dict(zip(("name", "exit", "seconds", "command"), line.split("\t", 3)))
         for line in (out / "steps.tsv").read_text().splitlines()]
report = {"dry_run": dry, "seconds": seconds, "steps": steps}
gpu = re.findall(r"^GPU (\{.*\})$", (out / "device_check.log").read_text(), re.M)
report["gpu"] = json.loads(gpu[-1]) if gpu else None
for name in ("bench", "train-agm", "train-student"):
    path = out / f"{name}.json"
    report[name] = json.loads(path.read_text()) if path.is_file() else None
tests = out / "cuda-tests.xml"
if tests.is_file():
    suite = re.search(r'<testsuite [^>]*', tests.read_text()).group(0)
    report["tests"] = {k: int(v) for k, v in re.findall(r'(tests|failures|errors|skipped)="(\d+)"', suite)}
(out / "device_check.json").write_text(json.dumps(report, indent=2))
print(f"device_check: wrote {out / 'device_check.json'} ({len(steps)} steps, {seconds} s)")
EOF
rm -f "$STEPS"
