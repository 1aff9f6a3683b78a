#!/usr/bin/env bash
# Runs tollgate's whole test suite on a fresh Debian machine: installs what
# the tests drive (the OpenSSH client, tmux, procps, rsyslog with TLS, openssl
# for throwaway certificates, sshd as a tunnel's SSH target, systemd-analyze
# and man to check the unit, User-Mode Linux for cgroup v2 limits, and the
# stock clients: PuTTY's plink, Dropbear's dbclient, paramiko, asyncssh;
# PostgreSQL 15 for the shared journal; promtool for /metrics; asciinema
# for recordings)
# when missing, then
# checks formatting, lints, runs unit and black-box tests, and builds and
# checks the Debian package (scripts/deb.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
command -v tmux >/dev/null 2>&1 || need+=(tmux)
command -v ps >/dev/null 2>&1 || need+=(procps)
[ -x /usr/sbin/rsyslogd ] || need+=(rsyslog)
[ -e /usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so ] || [ -n "$(find /usr/lib -name lmnsd_gtls.so -print -quit 2>/dev/null)" ] || need+=(rsyslog-gnutls)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v man >/dev/null 2>&1 || need+=(man-db)
command -v groff >/dev/null 2>&1 || need+=(groff-base)
# A pure cgroup v2 kernel for the per-session limits, where this one's
# memory and pids controllers are on cgroup v1.
[ -x /usr/bin/linux.uml ] || need+=(user-mode-linux)
# scripts/uml builds a preload for it (scripts/uml-xstate.c) with cc.
command -v cc >/dev/null 2>&1 && [ -e /usr/include/stdio.h ] || need+=(gcc libc6-dev)
# The stock clients each family's test drives (tests/clients_*.rs):
# PuTTY's plink and puttygen, Dropbear's dbclient and dropbearconvert,
# paramiko for Debian's python3, and venv for asyncssh from PyPI.
command -v plink >/dev/null 2>&1 && command -v puttygen >/dev/null 2>&1 || need+=(putty-tools)
command -v dbclient >/dev/null 2>&1 && command -v dropbearconvert >/dev/null 2>&1 || need+=(dropbear-bin)
[ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import paramiko' 2>/dev/null || need+=(python3 python3-paramiko)
/usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
# fail2ban-regex checks the shipped filter (tests/fail2ban.rs).
command -v fail2ban-regex >/dev/null 2>&1 || need+=(fail2ban)
# PostgreSQL 15 for the shared journal: the tests start throwaway clusters
# of their own (initdb in a temporary directory, as the postgres account).
[ -x /usr/lib/postgresql/15/bin/initdb ] && command -v psql >/dev/null 2>&1 || need+=(postgresql-15 postgresql-client-15)
# promtool checks /metrics (tests/metrics.rs); Debian ships it with the
# server, whose service is not started.
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
# asciinema plays and prints recordings (tests/recordings.rs); script(1)
# gives it the terminal it insists on.
command -v asciinema >/dev/null 2>&1 || need+=(asciinema)
command -v script >/dev/null 2>&1 || need+=(bsdutils)
if ((${#need[@]})); then
  echo "installing: ${need[*]}"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  # The packages' own services (sshd on port 22, rsyslog) are not started:
  # the tests run their own, on loopback.
  policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod 755 "$policy"
    trap '$sudo rm -f "$policy"' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
  [ -z "$policy" ] || { $sudo rm -f "$policy"; trap - EXIT; }
fi
if ! id nobody >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "the tests run sessions as 'nobody' when run as root, and there is no such account" >&2
  exit 1
fi

# asyncssh from PyPI, in a virtualenv of its own under target/ (never in
# the system's Python, never in the repository).
venv=target/asyncssh-venv
if ! "$venv/bin/python" -c 'import asyncssh' 2>/dev/null; then
  echo "installing: asyncssh (PyPI) into $venv"
  rm -rf "$venv"
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check asyncssh
fi

# The HTTP API's checkers from PyPI (tests/api.rs), likewise: an OpenAPI
# 3.1 validator and schemathesis, which fuzzes the API from its document.
venv=target/api-venv
if ! "$venv/bin/schemathesis" --version >/dev/null 2>&1 || ! [ -x "$venv/bin/openapi-spec-validator" ]; then
  echo "installing: schemathesis, openapi-spec-validator (PyPI) into $venv"
  rm -rf "$venv"
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check schemathesis openapi-spec-validator
fi

# A fresh clone gains nothing from incremental compilation, and its files
# would double target/ on a disk that CI shares.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
# Every test binary runs even after one fails, so a run shows all failures.
cargo test --locked --no-fail-fast 2>&1 | tee "$log" || status=$?
# The journal-heavy black-box tests again, each server's journal on a
# throwaway PostgreSQL 15 cluster of its own (issue 17): sessions, tunnels,
# processes, collect sessions and webhooks through the shared-journal backend.
echo "== again with each server's journal on PostgreSQL: collect, webhooks, tunnels, exec, clients_openssh, handover =="
TOLLGATE_TEST_JOURNAL=postgres cargo test --locked --no-fail-fast \
  --test collect --test webhooks --test tunnels --test exec --test clients_openssh --test handover \
  2>&1 | tee -a "$log" || status=$?
# cargo's last summary is the (empty) doc-test run: close with the total.
awk '/^test result:/ { p += $4; f += $6 } END { printf "%d passed, %d failed\n", p, f }' "$log"
# The Debian package: built with cargo-deb, its contents checked.
if deb=$(./scripts/deb.sh); then
  echo "deb: $deb holds the binary, the unit, both manual pages and the config (a conffile)"
else
  status=1
fi
exit "$status"
