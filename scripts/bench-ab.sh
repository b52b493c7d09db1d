#!/usr/bin/env bash
# Interleaved A/B of rmtrain binaries against PyTorch, 8 pairs x 128 (docs/performance.md).
#
#   scripts/bench-ab.sh OUT.jsonl LABEL=BINARY:DEVICE [LABEL=BINARY:DEVICE ...]
#   e.g. scripts/bench-ab.sh runs/bench/ab.jsonl before=/tmp/rmtrain-old:tch after=target/release/rmtrain:tch
#
# Each round trains with every binary in the order given, then PyTorch, then scores the same way,
# so each ratio compares runs minutes apart. Needs what scripts/bench-vs-pytorch.sh needs (assets,
# the reference venv in $PYREF, default ./pyref; .libtorch/env.sh is sourced when present).
# Environment: ROUNDS (default 4), THREADS (2). Run it on a quiet machine.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
die() { echo "bench-ab: $*" >&2; exit 1; }
[ $# -ge 2 ] || die "usage: scripts/bench-ab.sh OUT.jsonl LABEL=BINARY:DEVICE ..."
out="$1"; shift
pyref="${PYREF:-$here/pyref}"
py="$pyref/venv/bin/python"
model=assets/all-MiniLM-L6-v2
rounds="${ROUNDS:-4}"
threads="${THREADS:-2}"
[ -x "$py" ] && [ -d "$pyref/minilm-rm" ] || die "$pyref missing: bash ../shared/bench/setup_pyref.sh $pyref"
[ -d "$model" ] || die "$model missing: scripts/fetch-assets.sh"
for spec in "$@"; do
  case "$spec" in *=*:*) ;; *) die "$spec: expected LABEL=BINARY:DEVICE" ;; esac
  bin="${spec#*=}"; bin="${bin%:*}"
  [ -x "$bin" ] || die "$spec: $bin is not an executable"
done
# shellcheck disable=SC1091
[ -f .libtorch/env.sh ] && source .libtorch/env.sh
mkdir -p "$(dirname "$out")"
: >"$out"
echo "bench-ab: load $(cut -d' ' -f1-3 /proc/loadavg) (want < 0.3 before starting); writing $out" >&2

# run LABEL ROUND CMD...: CMD's last JSON line, tagged with the label, the round and the load.
run() {
  local label="$1" round="$2"; shift 2
  local line
  line="$("$@" 2>/dev/null | tail -n 1)" || die "$label failed: $*"
  "$py" -c 'import json,sys; d=json.loads(sys.argv[1]); d["label"]=sys.argv[2]; d["round"]=int(sys.argv[3]); d["loadavg_at_end"]=open("/proc/loadavg").read().split()[:3]; print(json.dumps(d))' "$line" "$label" "$round" >>"$out"
}

for r in $(seq 1 "$rounds"); do
  echo "round $r/$rounds" >&2
  for kind in train score; do
    for spec in "$@"; do
      label="${spec%%=*}"; rest="${spec#*=}"; bin="${rest%:*}"; dev="${rest##*:}"
      if [ "$kind" = train ]; then steps=(--steps 10); else steps=(--steps 20); fi
      run "$label $kind" "$r" "$bin" bench "$kind" --model "$model" --device "$dev" --batch 8 --seq 128 --warmup 3 "${steps[@]}"
    done
    mode=train; [ "$kind" = score ] && mode=infer
    run "pytorch $kind" "$r" "$py" ../shared/bench/rm_step_bench.py --model "$pyref/minilm-rm" --batch 8 --seq 128 --threads "$threads" --mode "$mode" --iters "${steps[1]}"
  done
done

# Per label: pairs/s per round, the ratio to PyTorch's run of the same kind and round, peak RSS.
"$py" - "$out" <<'PY'
import collections, json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def pps(d):
    return d.get("pairs_per_s") or (d.get("train") or d.get("infer") or {}).get("pairs_per_sec")
def rss(d):
    return d.get("peak_rss_mb") or 0
ref = {(d["round"], d["label"].split()[-1]): pps(d) for d in rows if d["label"].startswith("pytorch ")}
by = collections.defaultdict(list)
for d in rows:
    by[d["label"]].append((pps(d), pps(d) / ref[(d["round"], d["label"].split()[-1])], rss(d)))
print(f"{'label':24} {'pairs/s':>16} {'ratio to PyTorch':>22} {'median':>7} {'peak RSS MB':>14}")
for label, v in by.items():
    p, q, m = zip(*v)
    print(f"{label:24} {min(p):7.2f}–{max(p):<7.2f} {min(q):10.3f}–{max(q):<10.3f} {statistics.median(q):7.3f} {min(m):6.0f}–{max(m):<6.0f}")
PY
