#!/usr/bin/env bash
# Builds tollgate's Debian package with cargo-deb (installed when missing)
# from the [package.metadata.deb] in Cargo.toml, and checks what it holds:
# the binary, the systemd unit (enabled by postinst), both manual pages, the
# example config and the fail2ban filter as conffiles, the example jail, and
# the tollgate group made by postinst.
# Prints the package's path.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo-deb >/dev/null 2>&1 || cargo install --locked --quiet cargo-deb --no-default-features
out=target/debian/tollgate.deb
cargo deb --locked --quiet --strip --output "$out" >/dev/null

contents=$(dpkg-deb --contents "$out")
fail=0
for f in ./usr/sbin/tollgate ./usr/lib/systemd/system/tollgate.service \
  ./usr/share/man/man8/tollgate.8 ./usr/share/man/man5/tollgate.toml.5 \
  ./etc/tollgate/tollgate.toml ./etc/fail2ban/filter.d/tollgate.conf \
  ./usr/share/doc/tollgate/examples/fail2ban-jail.conf; do
  if ! grep -Eq " $f(\.gz)?\$" <<<"$contents"; then
    echo "deb: $f is missing from $out" >&2
    fail=1
  fi
done
for c in /etc/tollgate/tollgate.toml /etc/fail2ban/filter.d/tollgate.conf; do
  if ! dpkg-deb --info "$out" conffiles | grep -qx "$c"; then
    echo "deb: $c is not a conffile" >&2
    fail=1
  fi
done
postinst=$(dpkg-deb --info "$out" postinst)
if ! grep -q "deb-systemd-helper enable" <<<"$postinst"; then
  echo "deb: postinst does not enable tollgate.service" >&2
  fail=1
fi
if ! grep -q "addgroup --system --quiet tollgate" <<<"$postinst"; then
  echo "deb: postinst does not create the tollgate group" >&2
  fail=1
fi
# An upgrade hands the running daemon over (SIGUSR2) and nothing generated
# stops or restarts it first (which would end every live session).
if ! grep -q 'kill -USR2 "$main"' <<<"$postinst"; then
  echo "deb: postinst does not hand the running daemon over on upgrade" >&2
  fail=1
fi
prerm=$(dpkg-deb --info "$out" prerm 2>/dev/null || true)
if grep -Eq 'deb-systemd-invoke (restart|try-restart)' <<<"$postinst$prerm" ||
  { grep -q 'deb-systemd-invoke stop' <<<"$prerm" && ! grep -q '"$1" = remove ]; then' <<<"$prerm"; }; then
  echo "deb: the maintainer scripts stop or restart tollgate.service on upgrade" >&2
  fail=1
fi
if ! dpkg-deb --info "$out" postrm | grep -q "dpkg-statoverride --remove"; then
  echo "deb: postrm does not remove the permission overrides on purge" >&2
  fail=1
fi
[ "$fail" = 0 ] || exit 1
echo "$out"
