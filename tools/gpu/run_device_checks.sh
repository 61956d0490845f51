#!/usr/bin/env bash
# Runs every carried CUDA test binary on a GPU machine and reports PASS/FAIL per
# test. No Bazel needed there: the binaries and their non-CUDA shared libraries
# were packed here by tools/gpu/pack.sh (see tools/gpu/README.md).
#
# Usage: tools/gpu/run_device_checks.sh [DIR]
#   DIR   the packed folder with bin/ and lib/ (default: runs/gpu, or the
#         folder holding this script when it has a bin/ beside it)
# Env:
#   OUT           where results go (default ./gpu_results): nvidia-smi.txt,
#                 <test>.log, <test>.xml (gtest), summary.txt
#   TEST_TIMEOUT  seconds per test binary (default 300)
#   SANITIZE=1    also run each binary under compute-sanitizer memcheck (slow).
#                 API errors are not reported (--report-api-errors no): one
#                 test asks cudaMalloc for too much on purpose and checks the
#                 Status; memory errors (out-of-bounds, misaligned, leaks of
#                 launches) still fail the run.
#   ALLOW_SKIP=1  do not count skipped GPU tests as failures (by default a skip
#                 on a GPU machine means the device was not detected: FAIL)
# Exit status: 0 when every test passed, 1 otherwise.
set -uo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
if [[ $# -ge 1 ]]; then
  DIR="$1"
elif [[ -d "$here/bin" ]]; then
  DIR="$here"
else
  DIR="runs/gpu"
fi
DIR="$(cd "$DIR" 2>/dev/null && pwd)" || { echo "no such folder: ${1:-runs/gpu}" >&2; exit 1; }
OUT="${OUT:-$PWD/gpu_results}"
TEST_TIMEOUT="${TEST_TIMEOUT:-300}"
mkdir -p "$OUT"

echo "== device"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi 2>&1 | tee "$OUT/nvidia-smi.txt"
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv 2>&1 |
    tee -a "$OUT/nvidia-smi.txt"
else
  echo "nvidia-smi not found: is this a GPU machine?" | tee "$OUT/nvidia-smi.txt"
fi

# Carried libraries first; then find the CUDA 13 runtime/cuBLAS if the
# binaries' rpath (/usr/local/cuda/lib64) does not have them, e.g. inside a
# Python environment's nvidia/*/lib folders.
export LD_LIBRARY_PATH="$DIR/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
shopt -s nullglob
tests=("$DIR"/bin/*_test)
if [[ ${#tests[@]} -eq 0 ]]; then
  echo "no test binaries in $DIR/bin" >&2
  exit 1
fi
for lib in $(ldd "${tests[@]}" 2>/dev/null | awk '/not found/ {print $1}' | sort -u); do
  found=""
  for d in /usr/local/cuda/lib64 /usr/local/cuda-13*/lib64 /usr/local/cuda*/targets/x86_64-linux/lib; do
    [[ -e "$d/$lib" ]] && { found="$d"; break; }
  done
  if [[ -z "$found" ]]; then
    found="$(find / -xdev \( -path /proc -o -path /sys \) -prune -o -name "$lib" -print 2>/dev/null |
      head -1 | xargs -r dirname)"
  fi
  if [[ -n "$found" ]]; then
    echo "using $found for $lib"
    export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$found"
  else
    echo "WARNING: $lib not found anywhere; tests that need it will fail" >&2
  fi
done
# GCC 12's libstdc++ is carried in lib/compat; use it only if the machine's own
# libstdc++ is too old to load the binaries (it needs glibc >= 2.36 itself).
if "${tests[0]}" --gtest_list_tests 2>&1 | grep -q -E "GLIBCXX_|CXXABI_"; then
  echo "the machine's libstdc++ is older than GCC 12's: using $DIR/lib/compat"
  export LD_LIBRARY_PATH="$DIR/lib/compat:$LD_LIBRARY_PATH"
fi
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH" | tee "$OUT/env.txt"
ldd "${tests[0]}" >> "$OUT/env.txt" 2>&1

echo "== tests (logs in $OUT)"
pass=0
fail=0
summary="$OUT/summary.txt"
: > "$summary"
report() {  # status name seconds detail
  local line
  line="$(printf '%-4s %-28s %6ss  %s' "$1" "$2" "$3" "$4")"
  echo "$line" | tee -a "$summary"
}
for t in "${tests[@]}"; do
  name="$(basename "$t")"
  log="$OUT/$name.log"
  start=$(date +%s)
  timeout "$TEST_TIMEOUT" "$t" --gtest_output="xml:$OUT/$name.xml" > "$log" 2>&1
  rc=$?
  secs=$(( $(date +%s) - start ))
  skipped=$(grep -c -E '^\[  SKIPPED \] .* \([0-9]+ ms\)$' "$log" || true)
  if [[ $rc -eq 0 && ( $skipped -eq 0 || "${ALLOW_SKIP:-0}" == 1 ) ]]; then
    report PASS "$name" "$secs" "$(grep -E '^\[  PASSED  \]' "$log" | head -1)"
    pass=$((pass + 1))
  else
    if [[ $rc -eq 124 ]]; then
      detail="timed out after ${TEST_TIMEOUT}s"
    elif [[ $rc -eq 0 ]]; then
      detail="$skipped test(s) skipped: the GPU was not detected (see the log)"
    else
      detail="exit status $rc"
    fi
    report FAIL "$name" "$secs" "$detail"
    fail=$((fail + 1))
    echo "---- last lines of $log" && tail -30 "$log" && echo "----"
  fi
  if [[ "${SANITIZE:-0}" == 1 ]]; then
    sanitizer="$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)"
    start=$(date +%s)
    timeout "$TEST_TIMEOUT" "$sanitizer" --tool memcheck --report-api-errors no --error-exitcode 99 "$t" \
      > "$OUT/$name.memcheck.log" 2>&1
    rc=$?
    secs=$(( $(date +%s) - start ))
    if [[ $rc -eq 0 ]]; then
      report PASS "$name[memcheck]" "$secs" ""
      pass=$((pass + 1))
    else
      report FAIL "$name[memcheck]" "$secs" "exit status $rc (see $name.memcheck.log)"
      fail=$((fail + 1))
    fi
  fi
done
echo "== $pass passed, $fail failed" | tee -a "$summary"
[[ $fail -eq 0 ]]
