#!/usr/bin/env bash
# The main job: `hra demo` fine-tunes the bundled stories260K with HRA and
# with LoRA on a small task and prints the before/after table (no downloads).
# Installs, then builds only what it runs (the `hra` program, not the tests
# and benchmarks).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ]; then bash scripts/install-deps.sh; fi
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)" --target hra
exec build/tools/hra/hra demo "$@"
