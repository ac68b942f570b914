#!/usr/bin/env bash
# Install (as root) or name (otherwise) the Debian packages a target needs.
#   scripts/sysdeps.sh build   what `make install` needs to build pyscard, and the fonts the
#                              statements' PDFs embed (DejaVu: every Lithuanian letter)
#   scripts/sysdeps.sh test    what the test suite drives: pcscd + vpcd, PostgreSQL, Chromium,
#                              Redis (the rate limits' shared storage); systemd, curl, sqlite3
#                              and iproute2 (the units run under systemd booted in namespaces);
#                              and wrk, the load generator of `make bench`
set -euo pipefail
build=(gcc libc6-dev swig libpcsclite-dev python3-venv python3-dev fonts-dejavu-core)
test=(pcscd vsmartcard-vpcd postgresql chromium redis-server systemd curl sqlite3 iproute2 wrk)
case "${1:-build}" in
  build) want=("${build[@]}") ;;
  test) want=("${build[@]}" "${test[@]}") ;;
  *) echo "usage: $0 build|test" >&2; exit 2 ;;
esac
if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "sysdeps: not a Debian system; install the equivalents of: ${want[*]}" >&2
  exit 0
fi
missing=()
for p in "${want[@]}"; do
  # python3-venv/-dev are only needed when the interpreter in use lacks venv or headers
  if [ "$p" = python3-venv ] && python3 -c 'import ensurepip' 2>/dev/null; then continue; fi
  if [ "$p" = python3-dev ] && [ -f "$(python3 -c 'import sysconfig;print(sysconfig.get_paths()["include"])')/Python.h" ]; then continue; fi
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then
  echo "sysdeps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "sysdeps: missing Debian packages. Run as root:" >&2
  echo "  apt-get install ${missing[*]}" >&2
  exit 1
fi
