#!/usr/bin/env bash
# rmtrain against PyTorch + transformers, interleaved in one run (docs/performance.md).
#
#   scripts/bench-vs-pytorch.sh [OUT.jsonl]        (default runs/bench/bench-<date>.jsonl)
#
# Needs: assets (scripts/fetch-assets.sh), data/vader (scripts/main.sh makes it), a release build,
# and the reference venv: bash ../shared/bench/setup_pyref.sh "$PYREF" (default ./pyref).
# Environment: RMTRAIN (binary, default target/release/rmtrain), RMTRAIN_TCH (a binary built with
# --features tch, optional: adds the tch rows), ROUNDS (synthetic rounds, default 3),
# REAL_LIMIT (VADER movie pairs, default 3000; 0 skips the real-data rows), THREADS (2).
# Every line of OUT is one JSON result; the summary table goes to stdout.
# Run it on a quiet machine: each line carries the load average; a busy core halves the figures.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
out="${1:-runs/bench/bench-$(date +%Y%m%d-%H%M%S).jsonl}"
pyref="${PYREF:-$here/pyref}"
rm_bin="${RMTRAIN:-target/release/rmtrain}"
tch_bin="${RMTRAIN_TCH:-}"
rounds="${ROUNDS:-3}"
real_limit="${REAL_LIMIT:-3000}"
threads="${THREADS:-2}"
model=assets/all-MiniLM-L6-v2
data=data/vader/movie.mean.train.jsonl
die() { echo "bench-vs-pytorch: $*" >&2; exit 1; }
[ -x "$rm_bin" ] || die "$rm_bin missing: cargo build --release"
[ -d "$model" ] || die "$model missing: scripts/fetch-assets.sh"
[ -x "$pyref/venv/bin/python" ] && [ -d "$pyref/minilm-rm" ] || die "$pyref missing: bash ../shared/bench/setup_pyref.sh $pyref"
if [ "$real_limit" != 0 ] && [ ! -f "$data" ]; then die "$data missing: scripts/main.sh builds it (or REAL_LIMIT=0)"; fi
py="$pyref/venv/bin/python"
mkdir -p "$(dirname "$out")"
echo "bench-vs-pytorch: load $(cut -d' ' -f1-3 /proc/loadavg) (want < 0.3 before starting); writing $out" >&2

# run LABEL CMD...: one JSON line from CMD, tagged with the label and the load average.
run() {
  local label="$1"; shift
  local line
  line="$("$@" 2>/dev/null | tail -n 1)" || die "$label failed: $*"
  "$py" -c 'import json,sys; d=json.loads(sys.argv[1]); d["label"]=sys.argv[2]; d["loadavg_at_end"]=open("/proc/loadavg").read().split()[:3]; print(json.dumps(d))' "$line" "$label" >>"$out"
  echo "  $label done" >&2
}

rm_devices=("cpu:$rm_bin")
[ -n "$tch_bin" ] && rm_devices+=("tch:$tch_bin")
for r in $(seq 1 "$rounds"); do
  echo "round $r/$rounds (synthetic 8 pairs x 128)" >&2
  for dv in "${rm_devices[@]}"; do
    dev="${dv%%:*}"; bin="${dv#*:}"
    run "rmtrain-$dev train" "$bin" bench train --model "$model" --device "$dev" --batch 8 --seq 128 --warmup 3 --steps 10
  done
  run "pytorch train" "$py" ../shared/bench/rm_step_bench.py --model "$pyref/minilm-rm" --batch 8 --seq 128 --threads "$threads" --mode train
  for dv in "${rm_devices[@]}"; do
    dev="${dv%%:*}"; bin="${dv#*:}"
    run "rmtrain-$dev score" "$bin" bench score --model "$model" --device "$dev" --batch 8 --seq 128 --warmup 3 --steps 20
  done
  run "pytorch score" "$py" ../shared/bench/rm_step_bench.py --model "$pyref/minilm-rm" --batch 8 --seq 128 --threads "$threads" --mode infer --iters 20
done

# Real data on the CPU devices (REAL_TCH=1 adds tch: two more passes of ~4 min).
real_devices=("cpu:$rm_bin")
[ -n "$tch_bin" ] && [ "${REAL_TCH:-0}" = 1 ] && real_devices+=("tch:$tch_bin")
if [ "$real_limit" != 0 ]; then
  echo "real VADER movie pairs: $real_limit, batch 16, one pass" >&2
  for kind in train score; do
    for dv in "${real_devices[@]}"; do
      dev="${dv%%:*}"; bin="${dv#*:}"
      run "rmtrain-$dev $kind vader padded" "$bin" bench "$kind" --model "$model" --device "$dev" --batch 16 --data "$data" --limit "$real_limit"
      run "rmtrain-$dev $kind vader bucketed" "$bin" bench "$kind" --model "$model" --device "$dev" --batch 16 --data "$data" --limit "$real_limit" --group-by-length
    done
    torch=("$py" scripts/bench_torch_pairs.py --model "$pyref/minilm-rm" --data "$data" --limit "$real_limit" --batch 16 --threads "$threads" --mode "$kind")
    run "pytorch $kind vader padded" "${torch[@]}"
    run "pytorch $kind vader bucketed" "${torch[@]}" --group-by-length
  done
fi

# Summary: median pairs/s per label, and each label's ratio to the PyTorch row of its kind.
"$py" - "$out" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def pps(d):
    if "pairs_per_s" in d: return d["pairs_per_s"]
    key = "train" if "train" in d else "infer"
    return d[key]["pairs_per_sec"]
def rss(d):
    return d.get("peak_rss_mb") or d.get(("train" if "train" in d else "infer"), {}).get("peak_rss_mb")
by = {}
for d in rows:
    by.setdefault(d["label"], []).append(d)
def ref(label):
    kind = "train" if " train" in label else "score"
    tail = label.split(f" {kind}", 1)[1]
    return f"pytorch {kind}{tail}".replace(" bucketed", " padded") if "vader" in label else f"pytorch {kind}"
print("| run | pairs/s (median) | n | vs PyTorch | peak RSS MB | load at end |")
print("|---|---|---|---|---|---|")
for label, ds in by.items():
    v = statistics.median(pps(d) for d in ds)
    r = by.get(ref(label))
    ratio = f"{v / statistics.median(pps(d) for d in r):.2f}x" if r else ""
    print(f"| {label} | {v:.2f} | {len(ds)} | {ratio} | {max((rss(d) or 0) for d in ds):.0f} | {ds[-1]['loadavg_at_end'][0]} |")
EOF
