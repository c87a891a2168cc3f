#!/usr/bin/env bash
# The GPU check (DESIGN.md, "The GPU check"): one offline command for a machine that already has a
# GPU, torch with CUDA, pybind11, cmake, ninja and nvcc. It
#   1. builds pynn's CUDA kernels in place for this GPU only (compute capability from nvidia-smi),
#   2. checks that torch and pynn both see the GPU (otherwise the cuda tests would only skip),
#   3. runs the whole test suite (the cuda variants run because a GPU is present),
#   4. runs the quick benchmark on cuda,
#   5. writes benchmarks/results/gpu-check-<date>-<gpu>.md (machine, versions, summary table,
#      benchmark table, raw outputs) and the benchmark's CSV/markdown/charts beside it.
# Exits non-zero when the build fails, the GPU is unusable, a test fails or the benchmark crashes
# (a benchmark case that errors is listed in the report but does not fail the check).
# Each step gets a share of a total budget (GPU_CHECK_BUDGET, default 345 s) so that the report is
# written within 6 minutes even when a step hangs.
#
# Usage: tools/gpu_check.sh [--dry-run] [--skip-build] [--report-dir DIR]
#   --dry-run      no GPU needed: CPU-only build, tests and a CPU benchmark; for testing this script
#   --skip-build   use the in-place build already in src/pynn
#   --report-dir   where the report goes (default benchmarks/results)
# Environment: PYTHON (default python3), MAX_JOBS (default nproc), GPU_CHECK_ARCH (overrides
#   CMAKE_CUDA_ARCHITECTURES), GPU_CHECK_PYTEST_ARGS (default "tests"), GPU_CHECK_BENCH_ARGS (extra
#   arguments for python -m pynn.bench), GPU_CHECK_XDIST (pytest-xdist workers, 0 = off, default 8
#   when pytest-xdist is installed), GPU_CHECK_BUDGET (seconds), GPU_CHECK_COMMIT (the commit to name
#   in the report when the tree was copied without its own .git), GPU_CHECK_SUFFIX (appended to the
#   report's name, for a second check on the same day and GPU).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DRY=0 SKIP_BUILD=0 REPORT_DIR=benchmarks/results
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --skip-build) SKIP_BUILD=1 ;;
    --report-dir) REPORT_DIR=$2; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

T0=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET:-345}
remaining() { echo $(( BUDGET - ($(date +%s) - T0) )); }
PYTHON=${PYTHON:-$(command -v python3 || command -v python)}
MAX_JOBS=${MAX_JOBS:-$(nproc)}
# The source tree is imported when this script builds it in place (or a build is already there);
# --skip-build without an in-place build tests the installed pynn instead.
if [[ $SKIP_BUILD == 0 ]] || compgen -G "$ROOT/src/pynn/_C*.so" >/dev/null; then
  export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
LOGS=$(mktemp -d)
trap 'rm -rf "$LOGS"' EXIT
say() { echo "[gpu_check $(( $(date +%s) - T0 ))s] $*"; }
first_line() { head -n 1 | sed 's/^[[:space:]]*//; s/[[:space:]]*$//'; }

# ---- what machine is this
if ! command -v nvcc >/dev/null 2>&1; then
  for d in /usr/local/cuda/bin /opt/cuda/bin; do [[ -x $d/nvcc ]] && export PATH="$d:$PATH" && break; done
fi
if [[ $DRY == 1 ]]; then
  GPU_NAME="dry-run" GPU_DRIVER="n/a (dry run)" GPU_CC="n/a" GPU_MEM="n/a" ARCH="none (CPU-only build)"
else
  if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "gpu_check: nvidia-smi not found; is this a GPU machine? (--dry-run tests the script)" >&2
    exit 1
  fi
  IFS=',' read -r GPU_NAME GPU_DRIVER GPU_CC GPU_MEM < <(nvidia-smi -i 0 \
    --query-gpu=name,driver_version,compute_cap,memory.total --format=csv,noheader)
  GPU_NAME=$(echo "$GPU_NAME" | first_line) GPU_DRIVER=$(echo "$GPU_DRIVER" | first_line)
  GPU_CC=$(echo "${GPU_CC:-}" | first_line) GPU_MEM=$(echo "${GPU_MEM:-}" | first_line)
  if [[ ! $GPU_CC =~ ^[0-9]+\.[0-9]+$ ]]; then  # older drivers lack compute_cap: ask torch
    GPU_CC=$("$PYTHON" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability(0))')
  fi
  ARCH=${GPU_CHECK_ARCH:-${GPU_CC//./}}
fi
NVCC=$( (nvcc --version 2>/dev/null || echo "nvcc not found") | grep -E 'release|not found' | first_line)
read -r PYVER TORCH < <("$PYTHON" -c 'import platform, torch
print(platform.python_version(), torch.__version__, "(CUDA", str(torch.version.cuda) + ")")' 2>&1 | first_line)
if [[ -n ${GPU_CHECK_COMMIT:-} ]]; then  # a copied tree whose .git is not the tree's own history
  COMMIT="$GPU_CHECK_COMMIT (given by GPU_CHECK_COMMIT)"
  export PYNN_SOURCE_COMMIT=$GPU_CHECK_COMMIT  # for the benchmark's machine description too
else
  COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
  [[ -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]] && COMMIT="$COMMIT, uncommitted changes"
fi
DATE=$(date -u +%Y-%m-%d) STAMP=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
SLUG=$(echo "$GPU_NAME" | tr '[:upper:]' '[:lower:]' | sed -E 's/[^a-z0-9]+/-/g; s/^-+//; s/-+$//')
mkdir -p "$REPORT_DIR"
NAME="gpu-check-$DATE-$SLUG${GPU_CHECK_SUFFIX:-}"
REPORT="$REPORT_DIR/$NAME.md"
BENCH_OUT="$REPORT_DIR/$NAME"
say "GPU $GPU_NAME (cc $GPU_CC, driver $GPU_DRIVER); $NVCC; torch $TORCH; report $REPORT"

# ---- 1. build, for this GPU only
BUILD_RES="skipped (--skip-build)" BUILD_S=0 BUILD_RC=0
touch "$LOGS/build.log"
if [[ $SKIP_BUILD == 0 ]]; then
  t=$(date +%s)
  if [[ $DRY == 1 ]]; then
    BUILD_DIR=build/gpu-check-cpu CUDA_ARGS=(-DPYNN_CUDA=OFF)
  else
    BUILD_DIR=build/gpu-check-sm$ARCH CUDA_ARGS=(-DPYNN_CUDA=ON "-DCMAKE_CUDA_ARCHITECTURES=$ARCH")
  fi
  say "building into $BUILD_DIR with $MAX_JOBS jobs"
  PYBIND11_DIR=$("$PYTHON" -c 'import pybind11; print(pybind11.get_cmake_dir())')
  LIMIT=$(( $(remaining) - 150 ))   # leave the tests and the benchmark at least 150 s
  (( LIMIT < 60 )) && LIMIT=60
  { cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      "-DCMAKE_LIBRARY_OUTPUT_DIRECTORY=$ROOT/src/pynn" "-DPython_EXECUTABLE=$PYTHON" \
      "-Dpybind11_DIR=$PYBIND11_DIR" "${CUDA_ARGS[@]}" &&
    timeout -k 10 "$LIMIT" cmake --build "$BUILD_DIR" -j "$MAX_JOBS"; } > "$LOGS/build.log" 2>&1
  BUILD_RC=$?
  BUILD_S=$(( $(date +%s) - t ))
  if [[ $BUILD_RC == 0 ]]; then BUILD_RES="ok (CMAKE_CUDA_ARCHITECTURES=$ARCH, $MAX_JOBS jobs)"
  elif [[ $BUILD_RC == 124 ]]; then BUILD_RES="FAILED: timed out after ${LIMIT}s"
  else BUILD_RES="FAILED (exit $BUILD_RC)"; fi
  say "build: $BUILD_RES in ${BUILD_S}s"
  [[ $BUILD_RC != 0 ]] && tail -n 40 "$LOGS/build.log"
fi

# ---- 2. does the GPU work for torch and pynn
INFO_RC=0
echo "(not run)" > "$LOGS/info.log"
if [[ $BUILD_RC == 0 ]]; then
  "$PYTHON" -m pynn info > "$LOGS/info.log" 2>&1 || INFO_RC=$?
  if [[ $DRY == 0 && $INFO_RC == 0 ]]; then
    "$PYTHON" - >> "$LOGS/info.log" 2>&1 <<'EOF' || INFO_RC=$?
import torch, pynn
assert torch.cuda.is_available(), "torch sees no CUDA GPU"
assert pynn.cuda_built(), "pynn was built without its CUDA kernels"
assert pynn.cuda_available(), "pynn's CUDA kernels see no GPU"
x = torch.randn(1000, device="cuda")
torch.testing.assert_close(pynn.functional.relu(x), torch.relu(x))
print("smoke test: pynn.functional.relu on cuda matches torch")
EOF
  fi
  cat "$LOGS/info.log"
fi

# ---- 3. the whole test suite
TEST_RES="not run" TEST_S=0 TEST_RC=1
touch "$LOGS/tests.log"
if [[ $BUILD_RC == 0 && $INFO_RC == 0 ]]; then
  t=$(date +%s)
  read -r -a PYTEST_ARGS <<< "${GPU_CHECK_PYTEST_ARGS:-tests}"
  EXTRA=(-q -rfEs)
  WORKERS=${GPU_CHECK_XDIST:-8}
  if [[ $WORKERS != 0 ]] && "$PYTHON" -c 'import xdist' 2>/dev/null; then
    EXTRA+=(-n "$WORKERS")
    # each worker's torch would otherwise start one thread per core
    export OMP_NUM_THREADS=$(( $(nproc) / WORKERS > 0 ? $(nproc) / WORKERS : 1 ))
  fi
  "$PYTHON" -c 'import pytest_timeout' 2>/dev/null && EXTRA+=(--timeout=120)
  LIMIT=$(( $(remaining) - 75 ))    # leave the benchmark 75 s
  (( LIMIT < 60 )) && LIMIT=60
  say "tests: pytest ${EXTRA[*]} ${PYTEST_ARGS[*]} (limit ${LIMIT}s)"
  timeout -k 10 "$LIMIT" "$PYTHON" -m pytest "${EXTRA[@]}" "${PYTEST_ARGS[@]}" > "$LOGS/tests.log" 2>&1
  TEST_RC=$?
  unset OMP_NUM_THREADS
  TEST_S=$(( $(date +%s) - t ))
  COUNTS=$(grep -E '[0-9]+ (passed|failed|error|skipped)' "$LOGS/tests.log" | tail -n 1 | sed -E 's/=+//g; s/^ +//; s/ +$//')
  case $TEST_RC in
    0) TEST_RES="ok ($COUNTS)" ;;
    124) TEST_RES="FAILED: timed out after ${LIMIT}s ($COUNTS)" ;;
    *) TEST_RES="FAILED ($COUNTS)" ;;
  esac
  say "tests: $TEST_RES in ${TEST_S}s"
  tail -n 30 "$LOGS/tests.log"
fi

# ---- 4. the quick benchmark
BENCH_RES="not run" BENCH_S=0 BENCH_RC=1
touch "$LOGS/bench.log"
if [[ $BUILD_RC == 0 && $INFO_RC == 0 ]]; then
  t=$(date +%s)
  DEVICE=cuda; [[ $DRY == 1 ]] && DEVICE=cpu
  LIMIT=$(( $(remaining) - 5 ))
  (( LIMIT < 40 )) && LIMIT=40
  read -r -a BENCH_ARGS <<< "${GPU_CHECK_BENCH_ARGS:-}"
  say "benchmark: python -m pynn.bench --quick --device $DEVICE (limit ${LIMIT}s)"
  # --time-limit stops starting cases in time for the tables and charts to be written
  timeout -k 10 "$LIMIT" "$PYTHON" -m pynn.bench --quick --device "$DEVICE" --out "$BENCH_OUT" \
    --time-limit $(( LIMIT - 25 > 10 ? LIMIT - 25 : 10 )) "${BENCH_ARGS[@]}" > "$LOGS/bench.log" 2>&1
  BENCH_RC=$?
  BENCH_S=$(( $(date +%s) - t ))
  SUMMARY=$(grep -E '^[0-9]+ cases:' "$LOGS/bench.log" | tail -n 1)
  if [[ $BENCH_RC == 0 ]]; then BENCH_RES="ok ($SUMMARY)"
  elif [[ $BENCH_RC == 124 ]]; then BENCH_RES="FAILED: timed out after ${LIMIT}s"
  else BENCH_RES="FAILED (exit $BENCH_RC)"; fi
  say "benchmark: $BENCH_RES in ${BENCH_S}s"
  tail -n 15 "$LOGS/bench.log"
fi

# ---- 5. the report
TOTAL_S=$(( $(date +%s) - T0 ))
STATUS=0
[[ $BUILD_RC != 0 || $INFO_RC != 0 || $TEST_RC != 0 || $BENCH_RC != 0 ]] && STATUS=1
fence() { echo '```text'; sed 's/```/` ` `/g' "$1"; echo '```'; }
{
  echo "# GPU check: $GPU_NAME, $DATE"
  echo
  echo "Written by \`tools/gpu_check.sh\`$([[ $DRY == 1 ]] && echo ' --dry-run (no GPU: CPU build, tests and benchmark)'). Result: **$([[ $STATUS == 0 ]] && echo PASSED || echo FAILED)**."
  echo
  echo "| | |"
  echo "|---|---|"
  echo "| date | $STAMP |"
  echo "| GPU | $GPU_NAME, $GPU_MEM, compute capability $GPU_CC |"
  echo "| driver | $GPU_DRIVER |"
  echo "| nvcc | $NVCC |"
  echo "| torch | $TORCH |"
  echo "| python | $PYVER |"
  echo "| pynn commit | $COMMIT |"
  echo "| CPU | $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | first_line), $(nproc) cores |"
  echo
  echo "## Summary"
  echo
  echo "| step | result | seconds |"
  echo "|---|---|---|"
  echo "| build | $BUILD_RES | $BUILD_S |"
  if [[ $DRY == 1 ]]; then USABLE="not checked (dry run)"
  elif [[ $BUILD_RC != 0 ]]; then USABLE="not run"
  elif [[ $INFO_RC == 0 ]]; then USABLE="ok (torch and pynn see it; relu on cuda matches torch)"
  else USABLE="FAILED (see pynn info below)"; fi
  echo "| GPU usable | $USABLE | |"
  echo "| tests | $TEST_RES | $TEST_S |"
  echo "| benchmark | $BENCH_RES | $BENCH_S |"
  echo "| total | | $TOTAL_S |"
  echo
  if [[ -f $BENCH_OUT/results.md ]]; then
    echo "## Benchmark tables"
    echo
    echo "CSV, charts and machine.json: \`$BENCH_OUT/\`."
    echo
    sed 's/^#/##/' "$BENCH_OUT/results.md"   # its headings, one level down
    echo
  fi
  echo "## pynn info"
  echo
  fence "$LOGS/info.log"
  echo
  echo "## Test output"
  echo
  fence "$LOGS/tests.log"
  echo
  echo "## Benchmark output"
  echo
  fence "$LOGS/bench.log"
  echo
  echo "## Build output (last 40 lines)"
  echo
  tail -n 40 "$LOGS/build.log" > "$LOGS/build.tail"
  fence "$LOGS/build.tail"
} > "$REPORT"

echo
echo "| step | result | seconds |"
echo "|---|---|---|"
echo "| build | $BUILD_RES | $BUILD_S |"
echo "| GPU usable | $USABLE | |"
echo "| tests | $TEST_RES | $TEST_S |"
echo "| benchmark | $BENCH_RES | $BENCH_S |"
echo "| total | $([[ $STATUS == 0 ]] && echo PASSED || echo FAILED) | $TOTAL_S |"
echo "report: $REPORT"
exit $STATUS
