#!/usr/bin/env bash
# Runs the libFuzzer targets (docs/robustness.md).
#
#   fuzz/run.sh BUILD_DIR SECONDS [NAME...]
#
# NAME is model, png, jpeg, npy or latent (default: all, one after the
# other, SECONDS each). Each run starts from the committed seeds
# fuzz/corpus/NAME plus the regression inputs fuzz/regress/NAME (replayed
# first: a crash there fails at once) and grows BUILD_DIR/corpus-NAME; it
# stops at the first crash, leak, timeout or allocation over 2 GB, leaving
# the input in BUILD_DIR/artifacts/NAME/. The log, with libFuzzer's final
# stats, is BUILD_DIR/logs/NAME.log. Exit code non-zero if any run failed.
set -uo pipefail
cd "$(dirname "$0")/.."
build=$1 secs=$2
shift 2
names=("$@")
[ ${#names[@]} -eq 0 ] && names=(model png jpeg npy latent)
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export OMP_NUM_THREADS=1
status=0
for n in "${names[@]}"; do
  case $n in
    model) bin=fuzz_model ;;
    png|jpeg) bin=fuzz_input ;;
    npy) bin=fuzz_npy ;;
    latent) bin=fuzz_latent ;;
    *) echo "fuzz/run.sh: unknown target $n" >&2; exit 2 ;;
  esac
  mkdir -p "$build/corpus-$n" "$build/artifacts/$n" "$build/logs"
  dirs=("$build/corpus-$n" "fuzz/corpus/$n")
  [ -d "fuzz/regress/$n" ] && dirs+=("fuzz/regress/$n")
  "$build/$bin" -max_total_time="$secs" -timeout=30 -rss_limit_mb=2048 -malloc_limit_mb=2048 \
      -print_final_stats=1 -artifact_prefix="$build/artifacts/$n/" "${dirs[@]}" >"$build/logs/$n.log" 2>&1
  rc=$?
  stats=$(grep -E "^#[0-9]+[[:space:]]+(DONE|INITED)" "$build/logs/$n.log" | tail -1)
  runs=$(grep -E "^stat::number_of_executed_units" "$build/logs/$n.log" | awk '{print $2}')
  echo "fuzz $n: rc=$rc executions=${runs:-?} ${stats#*  }"
  if [ $rc -ne 0 ]; then
    status=1
    grep -E "ERROR|SUMMARY|runtime error|Test unit written" "$build/logs/$n.log" | head -5
  fi
done
exit $status
