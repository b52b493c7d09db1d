#!/usr/bin/env bash
# Batched generation with SmolLM2-135M-Instruct (the GGUF of scripts/fetch-assets.sh): rmtrain
# against PyTorch + transformers reading the same file, interleaved (docs/performance.md).
#
#   scripts/bench-generate-vs-pytorch.sh [OUT.jsonl]   (default runs/bench/generate-<date>.jsonl)
#
# 16 chat prompts, greedy, exactly NEW (default 64) new tokens per sequence (EOS ignored), batch 1
# (16 sequences one after the other) and batch 16, ROUNDS (default 2) rounds; 2 threads each.
# Needs a release build and PYREF (default ./pyref): ../shared/bench/setup_pyref.sh's venv plus
# `pip install gguf accelerate` (transformers reads GGUF through them).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
out="${1:-runs/bench/generate-$(date +%Y%m%d-%H%M%S).jsonl}"
pyref="${PYREF:-$here/pyref}"
rm_bin="${RMTRAIN:-target/release/rmtrain}"
rounds="${ROUNDS:-2}"
new="${NEW:-64}"
gguf=assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
py="$pyref/venv/bin/python"
die() { echo "bench-generate: $*" >&2; exit 1; }
[ -x "$rm_bin" ] || die "$rm_bin missing: cargo build --release"
[ -f "$gguf" ] || die "$gguf missing: scripts/fetch-assets.sh"
"$py" -c 'import gguf, accelerate, transformers' 2>/dev/null || die "$py lacks transformers/gguf/accelerate"
mkdir -p "$(dirname "$out")"
prompts="$(mktemp)"
trap 'rm -f "$prompts"' EXIT
for w in pirates robots dragons lawyers chefs astronauts twins ghosts detectives pianists surfers spies farmers kings zombies dancers; do
  echo "{\"prompt\": \"Write one short sentence reviewing a movie about $w.\"}"
done >"$prompts"
echo "bench-generate: load $(cut -d' ' -f1-3 /proc/loadavg) (want < 0.3); writing $out" >&2
for r in $(seq 1 "$rounds"); do
  for b in 1 16; do
    line="$(RAYON_NUM_THREADS=2 "$rm_bin" generate --model "$gguf" --input "$prompts" --chat --temperature 0 --max-new-tokens "$new" --ignore-eos --batch-size "$b" --no-progress 2>&1 >/dev/null | grep 'tokens/s' | tail -n 1)"
    tps="$(echo "$line" | sed -E 's/.* ([0-9.]+) tokens\/s.*/\1/')"
    echo "{\"impl\": \"rmtrain\", \"round\": $r, \"batch\": $b, \"tokens_per_s\": $tps, \"loadavg\": \"$(cut -d' ' -f1-3 /proc/loadavg)\"}" >>"$out"
    "$py" scripts/bench_torch_generate.py "$gguf" "$prompts" "$b" "$new" 2>/dev/null | tail -n 1 |
      "$py" -c "import json,sys; d=json.loads(sys.stdin.read()); d['round']=$r; d['loadavg']=open('/proc/loadavg').read().split()[:3]; print(json.dumps(d))" >>"$out"
    echo "  round $r batch $b done" >&2
  done
done
"$py" - "$out" <<'PY'
import json, sys, statistics as st
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| batch | rmtrain tokens/s | PyTorch tokens/s | ratio |\n|---|---|---|---|")
for b in (1, 16):
    r = [x["tokens_per_s"] for x in rows if x["impl"] == "rmtrain" and x["batch"] == b]
    p = [x["tokens_per_s"] for x in rows if x["impl"] == "pytorch" and x["batch"] == b]
    if r and p:
        print(f"| {b} | {', '.join(f'{v:.1f}' for v in r)} | {', '.join(f'{v:.1f}' for v in p)} | {st.median(r) / st.median(p):.2f} |")
PY
