#!/bin/sh
# rules_seeds.sh SLUICE_RULES SEEDS MESSAGES - every rule file of the
# fuzz corpus (tests/fuzz/corpus/rules: odd syntax, the regress inputs)
# through the whole engine, as sluiced loads rules: Hyperscan databases,
# cost model, gates, then a scan of the test messages. fuzz_rules covers
# the parser and the walks; this covers the build on the same inputs. Each
# must end by itself within 60 s with status 0 and, under ASan/UBSan, no
# report.
set -u
bin=$1 seeds=$2 msgs=$3
out=$(mktemp)
trap 'rm -f "$out"' EXIT
n=0 bad=0
for f in "$seeds"/*; do
    n=$((n + 1))
    timeout 60 "$bin" -r "$f" -d "$msgs" -q >"$out" 2>&1
    rc=$?
    if [ $rc -ne 0 ] || grep -q 'Sanitizer\|runtime error' "$out"; then
        bad=$((bad + 1))
        echo "FAIL: $f: status $rc (124: over 60 s)"
        tail -20 "$out"
    fi
done
echo "$n rule files, $bad failed"
[ "$n" -gt 0 ] && [ "$bad" -eq 0 ]
