#!/usr/bin/env bash
# run.sh - quick start: install what is missing, build, and run sluiced on
# the embedded default configuration (etc/sluice.conf: kernel transport on
# 127.0.0.1:2525, mail into var/Maildir). Extra arguments go to sluiced.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
sluice_install "${SLUICE_BUILD_PKGS[@]}"
[ -d build/meson-private ] || meson setup build -Dbuildtype=release -Dtests=false
ninja -C build
mkdir -p var
exec build/control/sluiced -c etc/sluice.conf "$@"
