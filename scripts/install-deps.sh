#!/usr/bin/env bash
# Installs everything hra needs to build and test, from Debian 12 packages.
# Idempotent: packages already present are left alone. Run as root.
set -euo pipefail

packages=(
    cmake g++ make
    libtorch-dev          # tensors and autograd (libtorch 1.13, CPU)
    libgloo-dev           # headers of c10d's Gloo process group (data-parallel training)
    libopenblas0-openmp   # fast BLAS behind libtorch (the reference BLAS is ~20x slower)
    libjemalloc-dev       # malloc that keeps a training step's freed pages (src/common/allocator.h)
    nlohmann-json3-dev    # JSON (configs, safetensors headers)
    libgtest-dev          # unit tests
    libbenchmark-dev      # benchmarks
    libcli11-dev          # command-line parsing
    libsentencepiece-dev  # SentencePiece tokenizer.model files
    libpcre2-dev          # pre-tokenizer regexes of tokenizer.json (UTF + Unicode properties)
    libicu-dev            # Unicode normalisation (NFC, ...) asked for by tokenizer.json
    libginac-dev          # symbolic equality of MATH answers (Python-syntax subset)
    libyaml-cpp-dev       # YAML config files for train / eval
    libzip-dev            # zip central directory checks of torch.save files (before PyTorch's reader inflates)
    zlib1g-dev            # gzip: CLIP's bundled BPE merges (data/clip/*.txt.gz)
    libpng-dev            # PNG images (hra sd generate)
    libjpeg-dev           # JPEG images (DreamBooth photos; libjpeg-turbo, as Pillow decodes them)
    libopencv-imgproc-dev # OpenCV's Canny: the control experiment's C2I metric
    pkg-config
    clang                 # fuzz targets (libFuzzer) with AddressSanitizer + UndefinedBehaviorSanitizer
    libclang-rt-14-dev    # clang's sanitizer and libFuzzer runtimes
)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
    if [ "$(id -u)" != 0 ]; then
        echo "install-deps: need root to install: ${missing[*]}" >&2
        exit 1
    fi
    echo "install-deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# libtorch links against libblas.so.3; make sure the alternative points at OpenBLAS.
alt=libblas.so.3-x86_64-linux-gnu
openblas=/usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3
if [ -e "$openblas" ] && [ "$(id -u)" = 0 ]; then
    current=$(update-alternatives --query "$alt" 2>/dev/null | awk '/^Value:/ {print $2}')
    if [ "$current" != "$openblas" ]; then
        update-alternatives --set "$alt" "$openblas"
    fi
fi
echo "install-deps: all dependencies present"
