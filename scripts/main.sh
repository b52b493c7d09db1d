#!/usr/bin/env bash
# The main job on a fresh machine: fetch the real testbed (MiniLM + VADER ratings, sha256-pinned),
# build rmtrain (release), run a recipe. Usage: scripts/main.sh [RECIPE] (default recipes/warm.toml)
set -euo pipefail
cd "$(dirname "$0")/.."
recipe="${1:-recipes/warm.toml}"
bash scripts/fetch-assets.sh
cargo build --release --locked --bin rmtrain
exec target/release/rmtrain recipe "$recipe"
