#!/usr/bin/env bash
# Installs dependencies (when run as root), builds, and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ]; then bash scripts/install-deps.sh; fi
bash scripts/build.sh
# llama.cpp for the GGUF interop test (node-llama-cpp's prebuilt CPU build, pinned by
# tests/interop/package-lock.json); without Node.js that test is skipped with the reason.
if command -v npm >/dev/null && [ ! -d tests/interop/node_modules/node-llama-cpp ]; then
    npm ci --prefix tests/interop --ignore-scripts --no-audit --no-fund --loglevel=error
fi
ctest --test-dir build --output-on-failure -j"$(nproc)"
bash scripts/fuzz.sh   # the readers under ASan + UBSan: corpora replayed, then fuzzed
