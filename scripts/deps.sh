#!/usr/bin/env bash
# deps.sh - install the Debian 12 packages sluice needs to build and test.
# Sourced by run.sh and test.sh; safe to run again (installs only what is
# missing). Needs root (or sudo).
set -euo pipefail

SLUICE_BUILD_PKGS=(
  meson ninja-build pkg-config gcc clang libclang-rt-14-dev
  libyaml-dev libcmocka-dev liburcu-dev libssl-dev libjemalloc-dev
  libhyperscan-dev libpcre2-dev libclamav-dev libdpdk-dev libxml2-dev libc-ares-dev libmicrohttpd-dev libhiredis-dev
)
SLUICE_TEST_PKGS=(
  python3 python3-pytest openssl swaks libnet-ssleay-perl curl postfix
  dovecot-core dovecot-lmtpd
  spamassassin
  clamav clamav-testfiles
  iproute2 python3-scapy ethtool rbldnsd python3-prometheus-client redis-server
)

sluice_missing() {
  local p missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  echo "${missing[@]:-}"
}

sluice_install() {
  local missing
  missing=$(sluice_missing "$@")
  [ -z "$missing" ] && return 0
  local SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "sluice: installing: $missing" >&2
  # Postfix must not configure or start a system mail server here: the
  # tests run their own private instances.
  echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
  $SUDO apt-get update -q
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $missing
}
