#!/bin/sh
# scan-floor.sh SLUICE_RULES SCAN_FLOOR [CACHE [DIR]] - the floor of the
# scanner's streams: for each target, the CPU time per message of its main
# database as sluice builds it and of the cheapest arrangements a literal
# prefilter could reach (bench/scan_floor.c), over the texts the corpus
# gives that target; then the sum of each target's cheapest. Options for
# sluice-rules that change the engine (-x 5, say) go in SLUICE_RULES_ARGS.
# A few minutes with a warm CACHE (a cold one is built first: ~3 minutes).
set -eu
[ $# -ge 2 ] || { echo "usage: $0 SLUICE_RULES SCAN_FLOOR [CACHE [DIR]]" >&2; exit 2; }
bin=$1 floor=$2
cache=${3:-$(mktemp -u /tmp/scan-floor-cache.XXXXXX)}
dir=${4:-$(dirname "$0")/.cache/corpus/msgs}
rules=/usr/share/spamassassin
[ -d "$rules" ] || { echo "$0: $rules: no rules (apt-get install -y spamassassin)" >&2; exit 2; }
n=$(find "$dir" -maxdepth 1 -type f | wc -l)
[ "$n" -gt 0 ] || { echo "$0: no messages in $dir (bench/scan.py makes the corpus)" >&2; exit 2; }
out=$(mktemp -d /tmp/scan-floor.XXXXXX)
echo "dumping the databases and texts of $n messages into $out ..." >&2
# shellcheck disable=SC2086
SLUICE_HS_DUMP=$out "$bin" -r "$rules" ${SLUICE_RULES_ARGS:-} -c "$cache" -d "$dir" -q >"$out/log" 2>&1 ||
    { echo "$0: $bin failed (see $out/log)" >&2; exit 1; }
total=0
for t in 0 1 2 3 4; do
    name=$(echo "header body rawbody full uri" | cut -d' ' -f$((t + 1)))
    [ -s "$out/items-$t-main" ] && [ -s "$out/text-$t" ] || continue
    echo "== $name"
    "$floor" -n "$n" "$rules" "$out/items-$t-main" "$out/text-$t" | tee "$out/floor-$t"
    # this target's cheapest: as-is, literals with the no-gate ones
    # together, or literals with the no-gate ones apart
    best=$(awk '/^as-is/ {a=$(NF-3)} /^literals/ {l=$(NF-3)} /^no-gate +[0-9]/ {g=$(NF-3)}
        /^lit\+no-gate/ {b=$(NF-3)} /^no-gate apart/ {p=$(NF-3)}
        END {m=a; if (b<m) m=b; if (l+g<m) m=l+g; if (l+p<m) m=l+p; printf "%.1f", m}' "$out/floor-$t")
    echo "cheapest: $best us/msg"
    total=$(echo "$total $best" | awk '{printf "%.1f", $1 + $2}')
done
echo "floor of the streams, every target at its cheapest: $total us/msg (the 10,000 msgs/s budget: 100 us/msg for everything)"
