#!/usr/bin/env bash
# Regenerates the committed quick-mode results from one clean commit, one experiment
# at a time, then REPRODUCTIONS.md (issue #20: "one clean rerun").
#
#   bash scripts/reproduce_all.sh [EXPERIMENT ...]    (default: every experiment)
#   MODE=smoke bash scripts/reproduce_all.sh NAME     (a quick check of the script)
#
# Measured runs: run this on an otherwise idle machine (nothing else running, no
# test suite, no benchmark); every result.json records its commit and the load
# average at its start and end, and `lattice report` warns where the load exceeded
# the core count. The tree must be clean (a `-dirty` commit is refused) unless
# ALLOW_DIRTY=1. Runs go to $WORKDIR (default /tmp/lattice_rerun/<commit>): a rerun of
# this script resumes each experiment from there. Each finished run's result.json,
# table.md and plots are copied into results/<experiment>/ (replacing the old ones);
# commit them together with the regenerated REPRODUCTIONS.md. The seed counts and the
# expected times are pre-registered in docs/REPRODUCE_PLAN.md: do not add seeds after
# seeing a result.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
# results/ and REPRODUCTIONS.md are this script's own outputs, not code (they do not
# make a result '-dirty' either: lattice.run.records.RESULT_PATHS)
if [[ -n "$(git status --porcelain --untracked-files=no -- . ':(exclude)results' ':(exclude)REPRODUCTIONS.md')" \
      && "${ALLOW_DIRTY:-0}" != 1 ]]; then
  echo "reproduce_all: the tree has uncommitted changes; commit them (results must name a clean commit) or set ALLOW_DIRTY=1" >&2
  exit 2
fi
commit=$(git rev-parse --short HEAD)
work=${WORKDIR:-/tmp/lattice_rerun/$commit}
mkdir -p "$work"
if [[ $# -gt 0 ]]; then
  names=("$@")
else
  names=()
  for f in experiments/*.py; do
    n=$(basename "$f" .py)
    # experiment files define a quick mode; shared modules (lm.py, __init__.py) do not
    grep -q "'quick'" "$f" && [[ $n != lm && $n != __init__ ]] && names+=("$n")
  done
fi
log="$work/log.txt"
echo "commit $commit, $(nproc) cores, $(date -u +%FT%TZ): ${names[*]}" | tee -a "$log"
for n in "${names[@]}"; do
  start=$(date +%s)
  echo "== $n start $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$log"
  rc=0
  $PY -m lattice.main --config="experiments/$n.py:${MODE:-quick}" --workdir="$work/$n" \
    > "$work/$n.out" 2>&1 || rc=$?
  if [[ $rc == 143 ]]; then  # SIGTERM: the run saved its checkpoint (arms.PREEMPTED_EXIT)
    echo "== $n preempted at $(date -u +%T); rerun this script to resume it" | tee -a "$log"
    exit 143
  elif [[ $rc != 0 ]]; then
    echo "== $n FAILED (see $work/$n.out)" | tee -a "$log"; continue
  fi
  echo "== $n done in $(( $(date +%s) - start )) s, load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$log"
  # issue #20's bound: the summed arm wall time of a quick result <= 1200 s
  # (docs/REPRODUCE_PLAN.md projects each one); reported, never acted on.
  $PY - "$work/$n/result.json" <<'PYEOF' 2>&1 | tee -a "$log"
import json, sys
r = json.load(open(sys.argv[1]))
total = sum(a.get('wall_s') or 0.0 for a in r['arms'])
over = ' OVER the 1200 s bound' if r['mode'] == 'quick' and total > 1200 else ''
print(f"== {r['experiment']}: summed arm time {total:.0f} s{over}; "
      f"{sum(c['passed'] for c in r['checks'])}/{len(r['checks'])} checks passed")
PYEOF
  dest="$PWD/results/$n"
  rm -rf "$dest" && mkdir -p "$dest"
  (cd "$work/$n" && find . \( -name result.json -o -name table.md -o -name '*.png' \) \
      -not -path '*/checkpoints/*' -exec cp --parents {} "$dest/" \;)
done
$PY -m lattice.cli report results --out REPRODUCTIONS.md
echo "REPRODUCTIONS.md regenerated; log: $log" | tee -a "$log"
