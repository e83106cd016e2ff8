#!/usr/bin/env bash
# Leak and memory-error check of the CLI paths (docs/robustness.md):
# info, score, encode, decode, sample, bench on a small model, each run
#   asan:     GLOWRT = an ASan+UBSan build (cmake --preset asan), LeakSanitizer on;
#   valgrind: GLOWRT = a normal build, under valgrind --leak-check=full.
# usage: tests/leak_check.sh asan|valgrind GLOWRT MODEL.glow
# Prints one line per command; exit code 1 if any reported an error or leak.
set -uo pipefail
mode=$1 glowrt=$2 model=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export OMP_NUM_THREADS=2
root=$(cd "$(dirname "$0")/.." && pwd)
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export LSAN_OPTIONS=suppressions=$root/tests/sanitizers/lsan.supp:print_suppressions=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
run() {  # run NAME EXPECTED_EXIT ARGS...
  local name=$1 want=$2; shift 2
  local t0=$SECONDS rc
  if [ "$mode" = valgrind ]; then
    valgrind -q --leak-check=full --errors-for-leak-kinds=definite,indirect --error-exitcode=99 \
      --log-file="$tmp/$name.vg" "$glowrt" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err"
    rc=$?
  else
    "$glowrt" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err"
    rc=$?
  fi
  if [ $rc -eq "$want" ] && ! grep -qE "Sanitizer|runtime error" "$tmp/$name.err"; then
    echo "ok   $name ($((SECONDS - t0)) s)"
  else
    echo "FAIL $name: exit $rc"
    cat "$tmp/$name.err" "$tmp/$name.vg" 2>/dev/null | head -30
    status=1
  fi
}
status=0
run info 0 info "$model" --verify
run sample 0 sample "$model" -n 5 -o "$tmp/s.npy" --seed 3
run sample_png 0 sample "$model" -n 1 -o "$tmp/one.png"
run score 0 score "$model" "$tmp/s.npy" "$tmp/one.png" --batch 2
run encode 0 encode "$model" "$tmp/s.npy" -o "$tmp/z.npy"
run decode 0 decode "$model" "$tmp/z.npy" -o "$tmp/d"
run bench 0 bench "$model" --repeats 2 --batch 2
run bench_sample 0 bench "$model" --mode sample --repeats 2 --batch 2 --profile
run bad_input 2 score "$model" "$tmp/z.npy"   # an error path: exit 2 wanted, no leak report
exit $status
