#!/usr/bin/env bash
# Make the libtorch that the `tch` device builds and runs against: a Python venv with PyPI
# torch==2.9.0 (exactly the version burn-tch 0.22.1 / torch-sys 0.22 checks for), then write
# DIR/env.sh with the variables a tch build and run need. Idempotent: a second run only checks.
#
#   scripts/setup-libtorch.sh [DIR]            (default ./.libtorch, git-ignored)
#   source .libtorch/env.sh
#   cargo build --release --features tch       (or: cargo test --release --locked --workspace --features tch)
#   target/release/rmtrain bench train --device tch ...
#
# PyPI has only the CUDA build of torch for Linux x86_64: the install pulls ~4 GB of nvidia-* wheels
# (about 4 minutes here) and the venv takes ~6 GB. The CPU kernels are the same; no GPU is needed.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
dir="${1:-$here/.libtorch}"
want="2.9.0"
die() { echo "setup-libtorch: $*" >&2; exit 1; }

py="${PYTHON:-python3}"
command -v "$py" >/dev/null 2>&1 || die "needs python3 (with venv and pip) on PATH"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
vpy="$dir/venv/bin/python"

have="$("$vpy" -W ignore -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null || true)"
if [ "$have" != "$want" ]; then
  echo "setup-libtorch: installing torch==$want into $dir/venv (have: '${have:-none}')" >&2
  [ -x "$vpy" ] || "$py" -m venv "$dir/venv" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  t0=$(date +%s)
  "$vpy" -m pip install --quiet --disable-pip-version-check "torch==$want" >&2 \
    || die "pip install torch==$want failed (is PyPI reachable?)"
  have="$("$vpy" -W ignore -c 'import torch; print(torch.__version__.split("+")[0])')"
  [ "$have" = "$want" ] || die "the venv has torch $have, expected $want"
  echo "setup-libtorch: installed in $(( $(date +%s) - t0 )) s" >&2
fi

lib="$("$vpy" -W ignore -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
[ -f "$lib/libtorch_cpu.so" ] || die "$lib/libtorch_cpu.so is missing: the torch install is broken (delete $dir and re-run)"

tmp="$(mktemp "$dir/.env.sh.XXXXXX")"
cat >"$tmp" <<EOF
# Written by scripts/setup-libtorch.sh: the environment to build and run rmtrain with --features tch.
# torch-sys finds libtorch through the venv's python (LIBTORCH_USE_PYTORCH=1); the binary has no
# rpath to it, so LD_LIBRARY_PATH is needed at run time too.
export VIRTUAL_ENV="$dir/venv"
export PATH="$dir/venv/bin:\$PATH"
export LIBTORCH_USE_PYTORCH=1
export LD_LIBRARY_PATH="$lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
EOF
mv "$tmp" "$dir/env.sh"
echo "setup-libtorch: torch $have ready. To build and run with the tch device:" >&2
cat <<EOF
source $dir/env.sh
cargo build --release --features tch
EOF
