#!/usr/bin/env bash
# The GPU checks of the "Backends and speed" issue, run ON a lent GPU machine (the `device` tool)
# from the repository root. What it expects under .gpu/ (built here, on the CPU machine, and
# carried; see docs/performance.md, "GPU"):
#   bin/rmtrain.xz, bin/rmtrain-tests.xz   the binary and the test binary built with
#                                          `--features wgpu,cuda` (DOCS_RS=1 RMTRAIN_CUDA_WITHOUT_LLVM=1)
#   bin/libllvm-absent.so                  scripts/llvm-absent-stubs.sh of both binaries
#   m1/, m2/                               all-MiniLM-L6-v2 split in two (the carry limit) + VADER
# Stages: setup | parity | bench | warm (each assumes the ones before it ran on this machine).
# Everything it prints is also kept under $OUT.
set -uo pipefail
stage="${1:?stage: setup, parity, bench or warm}"
root="$PWD"
out="${OUT:-/tmp/gpu-out}"
mkdir -p "$out"
export LD_PRELOAD=/work/main/target/gpu/libllvm-absent.so
# NVRTC (cubecl-cuda compiles kernels with it) from the CUDA toolkit or a pip wheel.
nvrtc="$(find /usr/local/cuda*/ /usr/lib /opt -name 'libnvrtc.so*' 2>/dev/null | head -1)"
[ -n "$nvrtc" ] && export LD_LIBRARY_PATH="$(dirname "$nvrtc"):${LD_LIBRARY_PATH:-}"
export VK_DRIVER_FILES="${VK_DRIVER_FILES:-/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json}"
bin=/work/main/target/release

case "$stage" in
setup)
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  echo "nvrtc: ${nvrtc:-none found}"
  # The test binary looks for the fixtures (and the rmtrain binary) under the folder it was built in.
  if [ "$root" != /work/main ]; then mkdir -p /work && ln -sfn "$root" /work/main; fi
  mkdir -p "$bin"
  xz -dc .gpu/bin/rmtrain.xz > "$bin/rmtrain" && xz -dc .gpu/bin/rmtrain-tests.xz > "$bin/rmtrain-tests"
  chmod +x "$bin/rmtrain" "$bin/rmtrain-tests"
  for d in cuda wgpu; do "$bin/rmtrain" score --device "$d" --model x --input y 2>&1 | tail -1; done
  ;;
parity)
  # Each parity test runs on flex, then on every GPU device compiled in (RMTRAIN_TEST_GPU=1).
  RMTRAIN_TEST_GPU=1 "$bin/rmtrain-tests" --test-threads 1 \
    tiny_bert_rewards_match_transformers_one_text_at_a_time tiny_bert_rewards_match_transformers_in_one_padded_batch \
    losses_match_reference_values training_lowers_the_loss_and_moves_every_parameter \
    optimizer_steps_match_pytorch_adamw_step_by_step 2>&1 | tee "$out/parity.log"
  ;;
bench)
  m=assets/all-MiniLM-L6-v2
  mkdir -p "$m" assets && cp target/gpu/m1/*.json target/gpu/m1/vocab.txt "$m"/ && cat target/gpu/m1/part-a .gpu/m2/part-b > "$m/model.safetensors"
  sha256sum "$m/model.safetensors"
  cp -a .gpu/m2/vader assets/
  ( while sleep 1; do nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader; done ) > "$out/nvidia-smi.log" 2>&1 &
  # Parity of rewards through the CLI (the tiny BERT fixture against transformers).
  for d in cuda wgpu; do
    "$bin/rmtrain" score --device "$d" --model tests/fixtures/hf/tiny-bert-rm --input tests/fixtures/hf/tiny-bert-rm/scores.jsonl > "$out/score-$d.jsonl"
    python3 -c "import json,sys; a=[json.loads(l) for l in open(sys.argv[1])]; b=[json.loads(l) for l in open(sys.argv[2])]; print(sys.argv[3], len(a), 'texts: max |reward - transformers| =', max(abs(x['reward']-y['reward']) for x,y in zip(a,b)))" "$out/score-$d.jsonl" tests/fixtures/hf/tiny-bert-rm/scores.jsonl "$d"
  done
  for run in "cuda 8" "cuda 64" "wgpu 8" "wgpu 64"; do
    set -- $run
    for kind in train score; do
      timeout 150 "$bin/rmtrain" bench "$kind" --model "$m" --device "$1" --batch "$2" --seq 128 --warmup 3 --steps 10 2>&1 | tail -1 | tee -a "$out/bench.jsonl"
    done
  done
  kill %1 2>/dev/null
  sort -t, -k1 -n "$out/nvidia-smi.log" | tail -1
  ;;
warm)
  ( while sleep 2; do nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader; done ) > "$out/nvidia-smi-warm.log" 2>&1 &
  start=$(date +%s)
  "$bin/rmtrain" recipe .gpu/m2/warm-cuda.toml 2>&1 | tail -40 | tee "$out/warm.log"
  echo "warm recipe on cuda: $(( $(date +%s) - start )) s"
  kill %1 2>/dev/null
  cp runs/warm-vader-cuda/report.md "$out/warm-report.md" 2>/dev/null
  cp runs/warm-vader-cuda/report.json "$out/warm-report.json" 2>/dev/null
  ;;
esac
