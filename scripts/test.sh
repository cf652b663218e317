#!/usr/bin/env bash
# Installs dependencies (when run as root), builds, and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ]; then bash scripts/install-deps.sh; fi
bash scripts/build.sh
ctest --test-dir build --output-on-failure -j"$(nproc)"
bash scripts/fuzz.sh   # the readers under ASan + UBSan: corpora replayed, then fuzzed
