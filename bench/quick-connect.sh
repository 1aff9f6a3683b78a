#!/usr/bin/env bash
# Quick comparison: connect + authenticate + `exec true` + exit, one OpenSSH
# client, tollgate vs OpenSSH sshd on loopback, alternating, same machine,
# same run. Key exchange forced to curve25519-sha256 and Ed25519 host keys for
# both. tollgate authenticates with a one-time token (keyboard-interactive,
# a journal write per login); sshd with an Ed25519 public key. The token for
# each tollgate round is issued outside the timed part.
# Usage: bench/quick-connect.sh [ROUNDS]   (default 30; run as root)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-30}
[ "$(id -u)" = 0 ] || { echo "run as root (sshd needs it)" >&2; exit 1; }
if ! [ -x /usr/sbin/sshd ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssh-server
fi
cargo build --release --locked -q
bin=$PWD/target/release/tollgate
dir=$(mktemp -d /tmp/tollgate-bench.XXXXXX)
trap 'kill $(cat "$dir/sshd.pid" 2>/dev/null) "$tg_pid" 2>/dev/null; rm -rf "$dir"' EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
tg_port=$(port); sshd_port=$(port)

cat > "$dir/tollgate.toml" <<CONF
[server]
listen = ["127.0.0.1:$tg_port"]
host_keys = ["$dir/tg_host_key"]
journal = "$dir/journal.db"
[profiles.bench]
user = "nobody"
command = "/bin/sh"
shell = "/bin/bash"
allow_exec = true
CONF
TOLLGATE_LOG=warn "$bin" --config "$dir/tollgate.toml" serve 2>"$dir/tollgate.log" &
tg_pid=$!

ssh-keygen -q -t ed25519 -N "" -f "$dir/sshd_host_key"
ssh-keygen -q -t ed25519 -N "" -f "$dir/id"
cp "$dir/id.pub" "$dir/authorized_keys"
mkdir -p /run/sshd
cat > "$dir/sshd_config" <<CONF
Port $sshd_port
ListenAddress 127.0.0.1
HostKey $dir/sshd_host_key
PidFile $dir/sshd.pid
AuthorizedKeysFile $dir/authorized_keys
StrictModes no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
PrintMotd no
KexAlgorithms curve25519-sha256
CONF
/usr/sbin/sshd -f "$dir/sshd_config" -E "$dir/sshd.log"
sleep 0.5

common=(-F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR
        -o KexAlgorithms=curve25519-sha256 -o HostKeyAlgorithms=ssh-ed25519 -o BatchMode=no)
askpass="$dir/askpass"; printf '#!/bin/sh\ncat %s/token\n' "$dir" > "$askpass"; chmod 700 "$askpass"

now() { echo "${EPOCHREALTIME/./}"; }   # microseconds
: > "$dir/tollgate.times"; : > "$dir/sshd.times"
for ((i = 0; i < rounds; i++)); do
  "$bin" --config "$dir/tollgate.toml" session issue --profile bench --login-user bench --output json \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])' > "$dir/token"
  t0=$(now)
  SSH_ASKPASS=$askpass SSH_ASKPASS_REQUIRE=force ssh "${common[@]}" -o PubkeyAuthentication=no \
    -p "$tg_port" bench@127.0.0.1 true < /dev/null
  t1=$(now); echo $((t1 - t0)) >> "$dir/tollgate.times"
  t0=$(now)
  ssh "${common[@]}" -o PasswordAuthentication=no -o KbdInteractiveAuthentication=no -i "$dir/id" \
    -p "$sshd_port" root@127.0.0.1 true < /dev/null
  t1=$(now); echo $((t1 - t0)) >> "$dir/sshd.times"
done

python3 - "$dir" "$rounds" <<'PY'
import statistics, sys
d, n = sys.argv[1], sys.argv[2]
def load(name):
    return [int(x) / 1000 for x in open(f"{d}/{name}.times")]
tg, sd = load("tollgate"), load("sshd")
print(f"connect + auth + exec true + exit, {n} rounds each, alternating (milliseconds)")
print(f"{'server':<10}{'min':>9}{'median':>9}{'max':>9}")
for name, v in (("tollgate", tg), ("sshd", sd)):
    print(f"{name:<10}{min(v):9.1f}{statistics.median(v):9.1f}{max(v):9.1f}")
print(f"ratio tollgate/sshd (median): {statistics.median(tg) / statistics.median(sd):.2f}")
PY
