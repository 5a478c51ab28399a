#!/usr/bin/env bash
# test.sh - install what is missing, build, and run every test:
#   1. build-test  (debugoptimized): suites fast + integration
#   2. build-asan  (ASan + UBSan):    suites fast + integration
#   3. build-fuzz  (clang, libFuzzer): suite fuzz, each target a short run
# Ends with one line "N passed, N failed" counted over all three runs
# (each meson test is one count: a cmocka program or a pytest file).
# SLUICE_TEST_ONLY=test|asan|fuzz runs one stage; extra arguments go to
# `meson test` (e.g. a test name).
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
set -e
sluice_install "${SLUICE_BUILD_PKGS[@]}" "${SLUICE_TEST_PKGS[@]}"
set +e

stages=${SLUICE_TEST_ONLY:-"test asan fuzz"}
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
# The Hyperscan build of Debian's SpamAssassin rules takes minutes cold;
# both build trees share its cache (keyed by the rule set and format).
mkdir -p .cache
export SLUICE_HS_SA_CACHE=${SLUICE_HS_SA_CACHE:-$PWD/.cache/scan_hs_sa.cache}
jobs=$(nproc)
status=0

setup() { # dir, meson args...
  local dir=$1; shift
  if [ ! -d "$dir/meson-private" ]; then
    meson setup "$dir" "$@" >"$dir.setup.log" 2>&1 || { cat "$dir.setup.log"; return 1; }
  fi
  ninja -C "$dir" -j"$jobs" >"$dir.build.log" 2>&1 || { tail -50 "$dir.build.log"; return 1; }
}

run_stage() { # name dir suites...
  local name=$1 dir=$2; shift 2
  local args=()
  for s in "$@"; do args+=(--suite "$s"); done
  echo "== sluice tests: $name ($dir: ${*})"
  rm -f "$dir/meson-logs/testlog.json"
  meson test -C "$dir" --print-errorlogs --num-processes 1 "${args[@]}" "${EXTRA[@]}" || status=1
}

EXTRA=("$@")
for st in $stages; do
  case $st in
  test)
    if setup build-test -Dbuildtype=debugoptimized; then
      run_stage test build-test fast integration
    else status=1; echo "FAIL: build-test did not build" >&2; fi ;;
  asan)
    if setup build-asan -Dbuildtype=debug -Db_sanitize=address,undefined -Db_lundef=false; then
      run_stage asan build-asan fast integration
    else status=1; echo "FAIL: build-asan did not build" >&2; fi ;;
  fuzz)
    if CC=clang setup build-fuzz -Dbuildtype=debug -Dfuzz=true -Db_sanitize=address,undefined \
        -Db_lundef=false -Dc_args=-fsanitize=fuzzer-no-link; then
      run_stage fuzz build-fuzz fuzz
    else status=1; echo "FAIL: build-fuzz did not build" >&2; fi ;;
  esac
done

/usr/bin/python3 - "$stages" <<'PY'
import json, os, sys
passed = failed = skipped = 0
dirs = {"test": "build-test", "asan": "build-asan", "fuzz": "build-fuzz"}
for st in sys.argv[1].split():
    log = os.path.join(dirs[st], "meson-logs", "testlog.json")
    if not os.path.exists(log):
        print(f"{st}: no test log (build failed?)")
        failed += 1
        continue
    for line in open(log):
        r = json.loads(line)
        res = r.get("result")
        if res in ("OK", "EXPECTEDFAIL"):
            passed += 1
        elif res == "SKIP":
            skipped += 1
        else:
            failed += 1
            print(f"FAILED: {st}/{r.get('name')} ({res})")
print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
PY
exit $status
