#!/usr/bin/env bash
# Build the libtorch host, export a correction from Python, and print host-vs-Python max difference.
# Usage (from the repository root): interop/cpp/run.sh [PYTHON]   (not wired into CI or make test)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
py="${1:-${PYTHON:-python}}"
build="$here/build"
prefix="$("$py" -c 'import torch; print(torch.utils.cmake_prefix_path)')"
cmake -S "$here" -B "$build" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j 4 >/dev/null
"$py" "$here/make_reference.py" "$build/data" >/dev/null
"$build/correction_host" "$build/data/correction.torchscript.pt" "$build/data/reference.bin"
