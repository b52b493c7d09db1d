#!/usr/bin/env bash
# For a cuda build linked without cubecl's LLVM bundle (build.rs: RMTRAIN_CUDA_WITHOUT_LLVM=1,
# where GitHub, which serves the bundle, cannot be reached): Rust calls external functions through
# the GOT, bound at load time, so the unresolved LLVM symbols must exist when the binary starts.
# This writes a shared object defining each of them as a function that stops the program with a
# message; run the binary with LD_PRELOAD=<it> (on a machine without Mesa's llvmpipe, which
# would find these instead of its own libLLVM). rmtrain builds cubecl-cuda with its `cpp`
# feature (kernels through NVRTC), which calls none of them.
# Usage: scripts/llvm-absent-stubs.sh OUT.so BINARY... (the symbols of all of them)
set -euo pipefail
out="$1"; shift
src="$(mktemp --suffix=.c)"
trap 'rm -f "$src"' EXIT
{
  echo '#include <stdio.h>'
  echo '#include <stdlib.h>'
  echo 'static void absent(const char *f) { fprintf(stderr, "rmtrain: %s called, but this build has no LLVM (cubecl NVRTC path expected)\n", f); abort(); }'
  for bin in "$@"; do nm -D --undefined-only "$bin"; done | awk '$1 == "U" && $2 !~ /@/ {print $2}' | grep -E '^(LLVM|cubecl_)' | sort -u |
    while read -r sym; do echo "void $sym(void) { absent(\"$sym\"); }"; done
} > "$src"
gcc -shared -fPIC -O1 -o "$out" "$src"
echo "$(grep -c '^void' "$src") stubs -> $out"
