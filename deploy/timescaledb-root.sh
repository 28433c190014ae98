#!/bin/sh
# Builds (or reuses) a Debian 13 root holding PostgreSQL 17 with TimescaleDB (Apache edition) for
# the test suite's TimescaleDB tier: no Debian 12 package carries TimescaleDB, and the trixie one
# needs a newer glibc, so it runs chrooted. Needs root and Debian's mirror; about 70 s and 850 MB
# the first time, nothing after that. Usage: timescaledb-root.sh ROOT
set -eu
ROOT=${1:?usage: timescaledb-root.sh ROOT}
# The mirror is this machine's own (its apt sources), unless PUSAT_DEBIAN_MIRROR names one.
apt_mirror() {
  # deb822 sources: the first URIs line whose path ends in /debian; then one-line sources.
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -r "$f" ] && sed -n 's|^URIs:[[:space:]]*\([^[:space:]]*/debian\)/*$|\1|p' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -r "$f" ] && sed -n 's|^deb[[:space:]]\{1,\}\(\[[^]]*\][[:space:]]\{1,\}\)\{0,1\}\([^[:space:]]*/debian\)/*[[:space:]].*|\2|p' "$f"
  done
}
MIRROR=${PUSAT_DEBIAN_MIRROR:-$(apt_mirror | head -n 1)}
[ -n "$MIRROR" ] || { echo "no Debian mirror in the apt sources; set PUSAT_DEBIAN_MIRROR" >&2; exit 1; }

if [ -x "$ROOT/usr/lib/postgresql/17/bin/postgres" ] && \
   ls "$ROOT"/usr/lib/postgresql/17/lib/timescaledb*.so >/dev/null 2>&1; then
  exit 0  # already built
fi
[ "$(id -u)" -eq 0 ] || { echo "building the TimescaleDB root needs root" >&2; exit 1; }
command -v debootstrap >/dev/null 2>&1 || {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap
}
PARTIAL="$ROOT.partial"
rm -rf "$PARTIAL"
mkdir -p "$PARTIAL"
debootstrap --variant=minbase trixie "$PARTIAL" "$MIRROR"
printf '#!/bin/sh\nexit 101\n' > "$PARTIAL/usr/sbin/policy-rc.d"
chmod +x "$PARTIAL/usr/sbin/policy-rc.d"
mount -t proc proc "$PARTIAL/proc"
trap 'umount "$PARTIAL/proc" 2>/dev/null || true' EXIT
chroot "$PARTIAL" apt-get update -qq
chroot "$PARTIAL" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
  --no-install-recommends postgresql-17 postgresql-17-timescaledb
chroot "$PARTIAL" apt-get clean
umount "$PARTIAL/proc"
trap - EXIT
rm -rf "$ROOT"
mv "$PARTIAL" "$ROOT"
echo "TimescaleDB root ready in $ROOT"
