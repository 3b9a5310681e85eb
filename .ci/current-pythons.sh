#!/usr/bin/env bash
# The current CPythons (Debian sid's 3.14 and 3.15, release and debug builds) in a cached chroot.
#
#   .ci/current-pythons.sh provision           build the chroot once (root and debootstrap needed)
#   .ci/current-pythons.sh test PYTEST-ARGS    for each interpreter: a venv with `pip install -e
#                                              .[test]` (redone when pyproject.toml changes), then
#                                              `python -m pytest PYTEST-ARGS`; fails at the end if any did
#   .ci/current-pythons.sh run PYTHON CMD...   one command with one interpreter's venv first on PATH
#
# sid's interpreters need a newer glibc than the host, so they run in a chroot: debootstrap'ed under
# $PYGUTS_CACHE (default ~/.cache/pyguts, outside the clone) and reused until the package list
# below changes. Each run enters it in a private mount namespace (unshare), with /proc, /dev, /sys
# and this checkout bind-mounted at the same path, so nothing stays mounted afterwards. Without root
# or debootstrap this says why and exits 0 (`make test` then covers pyenv's interpreters only).
set -euo pipefail

PYTHONS=(python3.14 python3.15 python3.14-dbg python3.15-dbg)
PACKAGES=python3.14,python3.14-dev,python3.14-venv,python3.14-dbg,python3.15,python3.15-dev,python3.15-venv,python3.15-dbg,gcc,g++,libc6-dev,make,ca-certificates,libcairo2,libjemalloc2,libgsl-dev,libmimalloc3,libtcmalloc-minimal4t64

REPO=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${PYGUTS_CACHE:-$HOME/.cache/pyguts}
ROOT=$CACHE/sid
STAMP=$ROOT/.pyguts-packages

say() { echo "== current-pythons: $*"; }

unavailable() {
  if [ "$(id -u)" != 0 ]; then
    echo "not root (a chroot needs root)"
  elif ! command -v unshare >/dev/null; then
    echo "no unshare (util-linux)"
  elif ! command -v debootstrap >/dev/null && ! [ -f "$STAMP" ]; then
    if command -v apt-get >/dev/null; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null 2>&1 \
        || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; } \
        || true
    fi
    command -v debootstrap >/dev/null || echo "no debootstrap (apt-get install debootstrap)"
  fi
}

# The Debian mirror this machine already uses (never a host name written into the project).
mirror() {
  local uri
  uri=$(grep -hoE '^(URIs:|deb) +[a-z]+://[^ ]+' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
        | awk '{print $2}' | grep -v -- '-security' | head -1)
  [ -n "$uri" ] || { echo "current-pythons: no Debian mirror in this machine's apt sources" >&2; exit 1; }
  echo "$uri"
}

provision() {
  if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$PACKAGES" ]; then
    return 0
  fi
  local tmp=$ROOT.new m
  m=$(mirror)
  say "debootstrap Debian sid with CPython 3.14 and 3.15 into $ROOT (once; about a minute)"
  rm -rf "$tmp"
  mkdir -p "$CACHE"
  if ! debootstrap --variant=minbase --include="$PACKAGES" sid "$tmp" "$m" >"$CACHE/debootstrap.log" 2>&1; then
    tail -20 "$CACHE/debootstrap.log" >&2
    echo "current-pythons: debootstrap failed (whole log: $CACHE/debootstrap.log)" >&2
    exit 1
  fi
  rm -rf "$ROOT"
  mv "$tmp" "$ROOT"
  echo "$PACKAGES" >"$STAMP"
}

# Run "$@" (a bash script and its arguments) inside the chroot, in this checkout.
in_chroot() {
  cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
  [ -f /etc/ssl/certs/ca-certificates.crt ] && cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/host-ca.crt"
  mkdir -p "$ROOT$REPO"
  unshare --mount --propagation private /bin/bash -c '
    set -e; root=$1; repo=$2; shift 2
    mount -t proc proc "$root/proc"
    mount --rbind /dev "$root/dev"
    mount --rbind /sys "$root/sys"
    mount --bind "$repo" "$root$repo"
    exec chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM="${TERM:-dumb}" \
      PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin \
      PIP_CERT=/etc/ssl/certs/host-ca.crt PIP_DISABLE_PIP_VERSION_CHECK=1 \
      GLIBC_TUNABLES="${GLIBC_TUNABLES:-}" PYGUTS_IN_CHROOT=1 \
      /bin/bash -c "cd \"$repo\" && $*"' _ "$ROOT" "$REPO" "$@"
}

# Bash (run inside the chroot) that makes the venv of interpreter $1 when missing or stale.
venv_script() {
  local py=$1 venv=.venvs/sid-$1
  cat <<EOF
if [ ! -f $venv/.installed ] || [ pyproject.toml -nt $venv/.installed ]; then
  echo "== current-pythons: set-up for \$($py -c 'import sys; print(sys.version.split()[0])') ($py)"
  rm -rf $venv && $py -m venv $venv && $venv/bin/pip install --quiet -e '.[test]' && touch $venv/.installed
fi
EOF
}

main() {
  local cmd=${1:-}
  shift || true
  local why
  why=$(unavailable)
  if [ -n "$why" ]; then
    echo "warning: skipping CPython 3.14/3.15 (Debian sid chroot): $why"
    exit 0
  fi
  provision
  case "$cmd" in
    provision) ;;
    test)
      local py args failed=()
      args=$(printf '%q ' "$@")
      for py in "${PYTHONS[@]}"; do
        in_chroot "$(venv_script "$py")
echo \"== version-sensitive tests on \$(.venvs/sid-$py/bin/python -c 'import sys; print(sys.version.split()[0], \"debug build\" if hasattr(sys, \"gettotalrefcount\") else \"\")') ($py)\"
.venvs/sid-$py/bin/python -m pytest $args" || failed+=("$py")
      done
      if [ ${#failed[@]} -gt 0 ]; then
        echo "== current-pythons: FAILED on ${failed[*]}"
        exit 1
      fi
      ;;
    run)
      local py=$1
      shift
      in_chroot "$(venv_script "$py")
PATH=\$PWD/.venvs/sid-$py/bin:\$PATH $(printf '%q ' "$@")"
      ;;
    *) echo "usage: $0 provision | test PYTEST-ARGS... | run PYTHON CMD..." >&2; exit 2 ;;
  esac
}

main "$@"
