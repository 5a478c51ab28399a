#!/bin/sh
# scan-callgrind.sh SLUICE_RULES CACHE [DIR] - instructions per message of
# the scanner (valgrind's callgrind, collection inside scan_msg_begin /
# scan_msg_feed / scan_msg_end only: no start-up, no cache load), over every
# message file in DIR (default: the benchmark corpus). The repeatable figure
# behind bench/RESULTS.md's scanning notes: it does not move with the load
# on the machine, as CPU seconds do. Build the cache first (a plain
# sluice-rules run with -c CACHE) with SLUICE_HS_PLATFORM=avx2 in the
# environment on a machine with AVX-512: valgrind runs no AVX-512 code, so
# a cache built for it does not load there and would be rebuilt under
# valgrind (hours). About 5 s per message under valgrind. Options for
# sluice-rules that change the engine (-x 5, say) go in SLUICE_RULES_ARGS,
# for the cache's build and this run alike.
set -eu
[ $# -ge 2 ] || { echo "usage: $0 SLUICE_RULES CACHE [DIR]" >&2; exit 2; }
bin=$1 cache=$2
dir=${3:-$(dirname "$0")/.cache/corpus/msgs}
command -v valgrind >/dev/null || { echo "$0: valgrind is missing (apt-get install -y valgrind)" >&2; exit 2; }
args=${SLUICE_RULES_ARGS:-}
[ -s "$cache" ] || { echo "$0: $cache: no cache; run SLUICE_HS_PLATFORM=avx2 $bin -r /usr/share/spamassassin $args -c $cache first" >&2; exit 2; }
n=$(find "$dir" -maxdepth 1 -type f | wc -l)
[ "$n" -gt 0 ] || { echo "$0: no messages in $dir (bench/scan.py makes the corpus)" >&2; exit 2; }
out=$(mktemp /tmp/scan-callgrind.XXXXXX)
echo "callgrind over $n messages of $dir ..." >&2
valgrind --tool=callgrind --collect-atstart=no --toggle-collect=scan_msg_begin \
    --toggle-collect=scan_msg_feed --toggle-collect=scan_msg_end --callgrind-out-file="$out" \
    "$bin" -r /usr/share/spamassassin $args -c "$cache" -d "$dir" -q >/dev/null 2>&1
tot=$(callgrind_annotate "$out" | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
echo "$((tot / n)) instructions per message ($n messages; profile: $out)"
