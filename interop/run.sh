#!/usr/bin/env bash
# Build the interop hosts once into interop/build, train and export the learned parts from Python, and run
# every host against Python: host-vs-Python max differences, the adjoint test, and the bad-input refusals.
# Usage (from anywhere): interop/run.sh [PYTHON]      (`make interop` runs it with the project's venv)
# A compiler that is missing and cannot be installed (apt-get, as root) is reported in one line and its
# host skipped: never silently. Exit non-zero when a host misses its bar or a bad input is not refused.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
py="${1:-${PYTHON:-$here/../.venv/bin/python}}"
case "$py" in */*) py="$(cd "$(dirname "$py")" && pwd)/$(basename "$py")" ;; esac  # absolute, venv link kept
build="${INTEROP_BUILD:-$here/build}"  # where CMake builds and the data go
data="$build/data"
fails=0

say() { echo "interop: $*"; }

# install PACKAGE [...] with apt-get when we are root and it exists; quiet; returns apt-get's status
apt_install() {
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || return 1
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1 && return 0
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1
}

if ! command -v cmake >/dev/null || ! command -v g++ >/dev/null; then
  say "installing cmake and g++ (apt-get)"
  if ! apt_install cmake g++; then
    say "SKIPPED: all hosts: cmake or g++ is missing and cannot be installed (need root and apt-get)"
    exit 0
  fi
fi
fortran=ON
if ! command -v gfortran >/dev/null; then
  say "installing gfortran (apt-get)"
  if ! apt_install gfortran; then
    fortran=OFF
    say "SKIPPED: the Fortran host: gfortran is missing and cannot be installed (need root and apt-get)"
  fi
fi
if ! prefix="$("$py" -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null)"; then
  say "SKIPPED: all hosts: $py cannot import torch (run make test or install the project first)"
  exit 0
fi

# A cache configured before gfortran existed remembers "no Fortran compiler": start that cache afresh.
if [ "$fortran" = ON ] && grep -q "CMAKE_Fortran_COMPILER:FILEPATH=CMAKE_Fortran_COMPILER-NOTFOUND" "$build/CMakeCache.txt" 2>/dev/null; then
  rm -f "$build/CMakeCache.txt"
fi
t0=$SECONDS
mkdir -p "$build"
if ! cmake -S "$here" -B "$build" -DCMAKE_PREFIX_PATH="$prefix" -DHYBRIDA_FORTRAN="$fortran" >"$build/build.log" 2>&1 ||
   ! cmake --build "$build" -j "${JOBS:-2}" >>"$build/build.log" 2>&1; then
  tail -n 30 "$build/build.log"
  say "FAILED: the build (log: $build.log)"
  exit 1
fi
say "built in $((SECONDS - t0)) s (CMake, libtorch of $prefix)"

t0=$SECONDS
if ! "$py" "$here/make_reference.py" "$data" | sed 's/^/interop: python: /'; then
  say "FAILED: make_reference.py"
  exit 1
fi
say "learned parts trained, exported and Python references written in $((SECONDS - t0)) s"

# run NAME CMD...: the command must exit 0; its output is shown
run() {
  local name="$1"
  shift
  if ! "$@"; then
    say "FAILED: $name"
    fails=$((fails + 1))
  fi
}
hosts=("$build/l96_host")
[ "$fortran" = ON ] && [ -x "$build/l96_host_f" ] && hosts+=("$build/l96_host_f")
for kind in resolvent tendency; do
  for host in "${hosts[@]}"; do
    run "$(basename "$host") $kind" "$host" "$data/correction_$kind.torchscript.pt" "$data/reference_$kind.bin"
  done
done
shosts=("$build/surrogate_host")
[ "$fortran" = ON ] && [ -x "$build/surrogate_host_f" ] && shosts+=("$build/surrogate_host_f")
for host in "${shosts[@]}"; do
  run "$(basename "$host")" "$host" "$data/surrogate.torchscript.pt" "$data/surrogate_reference.bin"
done
run shim_check "$build/shim_check" "$data/correction_resolvent.torchscript.pt"

# Bad input: each host must print one "error:" line and exit 2 (no crash, no silence).
bad="$data/bad"
rm -rf "$bad" && mkdir -p "$bad"
cp "$data/correction_resolvent.torchscript.pt" "$bad/pair.torchscript.pt"
cp "$data/correction_tendency.torchscript.pt.json" "$bad/pair.torchscript.pt.json"  # another export's manifest
head -c 4000 "$data/correction_resolvent.torchscript.pt" >"$bad/cut.torchscript.pt"      # truncated file...
"$py" - "$bad/cut.torchscript.pt" "$data/correction_resolvent.torchscript.pt.json" <<'EOF'
import hashlib, json, sys
from pathlib import Path
p = Path(sys.argv[1])  # ...with a manifest that matches it, so that libtorch itself must refuse it
m = json.loads(Path(sys.argv[2]).read_text())
m.update(file=p.name, sha256=hashlib.sha256(p.read_bytes()).hexdigest())
Path(str(p) + ".json").write_text(json.dumps(m))
EOF
refused=0
expect_refusal() {
  local what="$1"
  shift
  local err rc
  err="$("$@" 2>&1 >/dev/null)"
  rc=$?
  if [ "$rc" = 2 ] && [ "$(printf '%s\n' "$err" | wc -l)" = 1 ] && [[ "$err" == error:* ]]; then
    refused=$((refused + 1))
    echo "  $what -> $err"
  else
    say "FAILED: bad input not refused cleanly: $what (exit $rc): $err"
    fails=$((fails + 1))
  fi
}
ref="$data/reference_resolvent.bin"
for host in "${hosts[@]}"; do
  h="$(basename "$host")"
  echo "interop: bad input, $h:"
  expect_refusal "missing file" "$host" "$bad/nope.torchscript.pt" "$ref"
  expect_refusal "manifest of another export" "$host" "$bad/pair.torchscript.pt" "$ref"
  expect_refusal "truncated model file" "$host" "$bad/cut.torchscript.pt" "$ref"
  expect_refusal "surrogate instead of correction" "$host" "$data/surrogate.torchscript.pt" "$ref"
  expect_refusal "host passes n=39" "$host" "$data/correction_resolvent.torchscript.pt" "$ref" 39
  expect_refusal "reference of the other kind" "$host" "$data/correction_resolvent.torchscript.pt" "$data/reference_tendency.bin"
done
for host in "${shosts[@]}"; do
  echo "interop: bad input, $(basename "$host"):"
  expect_refusal "host passes n=41" "$host" "$data/surrogate.torchscript.pt" "$data/surrogate_reference.bin" 41
  expect_refusal "correction instead of surrogate" "$host" "$data/correction_resolvent.torchscript.pt" "$data/surrogate_reference.bin"
  expect_refusal "trajectory reference given" "$host" "$data/surrogate.torchscript.pt" "$data/reference_resolvent.bin"
done
say "bad input: $refused cases refused with a one-line message and exit 2"

if [ "$fails" -ne 0 ]; then
  say "FAILED: $fails check(s)"
  exit 1
fi
say "all checks passed"
