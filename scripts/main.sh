#!/usr/bin/env bash
# The main job for now: the adapter benchmark (HRA vs LoRA vs frozen vs PEFT's
# loop), ending with the comparison table. Installs and builds first.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ]; then bash scripts/install-deps.sh; fi
bash scripts/build.sh
exec build/bench/bench_adapters "$@"
