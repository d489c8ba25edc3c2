#!/usr/bin/env bash
# The Debian package, built and put through its whole life on this machine: install, every
# installed file checked, `plantwatch check` on the installed config as the service user,
# reinstall (the upgrade path), remove (config and state stay), purge (both gone).
#
#   tests/package/deb.sh             package the dev build (seconds; what .ci/run does)
#   tests/package/deb.sh --release   package a release build, as gateways get it (slow)
#
# Needs root (dpkg -i) and a machine where the plantwatch package is not installed. Works in a
# container without a running systemd: the maintainer scripts then skip systemctl and say so.
# Under CI=true a missing tool is a failure, never a skip.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
exec </dev/null

# The version `cargo install` takes when cargo-deb is missing (`--locked`: its own lock file).
CARGO_DEB_VERSION=3.8.0

PROFILE=deb-ci
[[ "${1:-}" == "--release" ]] && PROFILE=release

fail() {
  echo "deb.sh: $*" >&2
  exit 1
}

# need TOOL HOW: TOOL must be on PATH; outside CI its absence skips the whole test.
need() {
  PATH="$PATH:/usr/sbin:/sbin" command -v "$1" >/dev/null && return 0
  if [[ "${CI:-}" == "true" ]]; then fail "$1 is missing ($2)"; fi
  echo "deb.sh: skipped: $1 is missing ($2)"
  exit 0
}

# check WHAT COMMAND...: the command must succeed; WHAT names it in the log.
check() {
  local what="$1"; shift
  if "$@"; then echo "  ok: $what"; else fail "FAILED: $what"; fi
}

# mode_owner PATH: "MODE USER GROUP".
mode_owner() {
  stat -c '%a %U %G' "$1"
}

[[ $EUID -eq 0 ]] || { [[ "${CI:-}" == "true" ]] && fail "needs root (dpkg -i)"; echo "deb.sh: skipped: needs root (dpkg -i)"; exit 0; }
need dpkg "a Debian system"
need dpkg-deb "a Debian system"
need strip "apt-get install binutils"
if dpkg-query -W -f='${Status}' plantwatch 2>/dev/null | grep -q 'installed\|config-files'; then
  fail "the plantwatch package is already on this machine; this test would remove it (dpkg -P plantwatch first)"
fi

if ! cargo deb --version >/dev/null 2>&1; then
  echo "cargo-deb missing: cargo install cargo-deb --version $CARGO_DEB_VERSION --locked"
  cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked --quiet
fi
cargo deb --version

if [[ "$PROFILE" == deb-ci ]]; then
  deb="$(packaging/build-deb.sh --profile deb-ci)"
  # build-deb.sh left the gateway binary (no `demo`) in target/debug; later CI steps run the
  # default one (a re-link: both are built).
  cargo build
else
  deb="$(packaging/build-deb.sh)"
fi
echo "  $deb: $(stat -c %s "$deb") bytes"
echo "  contents (dpkg -c):"
dpkg-deb -c "$deb" | awk '{printf "    %s %s %9s %s\n", $1, $2, $3, $6}'
dpkg-deb -f "$deb" Package Version Architecture Installed-Size Depends | sed 's/^/    /'

# Whatever happens below, the machine is left without the package.
trap 'dpkg -P plantwatch >/dev/null 2>&1 || true' EXIT

echo "dpkg -i"
dpkg -i "$deb"

check "binary runs: $(/usr/bin/plantwatch --version)" /usr/bin/plantwatch --version
check "every file dpkg lists exists" bash -c 'dpkg -L plantwatch | while read -r f; do [[ -e "$f" ]] || { echo "missing: $f" >&2; exit 1; }; done'
check "unit installed" test -f /usr/lib/systemd/system/plantwatch.service
if command -v systemd-analyze >/dev/null; then
  check "systemd-analyze verify plantwatch.service" \
    systemd-analyze verify /usr/lib/systemd/system/plantwatch.service
else
  need systemd-analyze "apt-get install systemd"
fi
check "sysusers and tmpfiles snippets installed" \
  test -f /usr/lib/sysusers.d/plantwatch.conf -a -f /usr/lib/tmpfiles.d/plantwatch.conf
check "user plantwatch exists, in group dialout" bash -c 'id -nG plantwatch | tr " " "\n" | grep -qx dialout'
check "/etc/plantwatch/plantwatch.toml is a conffile" \
  bash -c "dpkg-query -W -f='\${Conffiles}' plantwatch | grep -q '^ /etc/plantwatch/plantwatch.toml '"
check "conffile is 0640 root:plantwatch ($(mode_owner /etc/plantwatch/plantwatch.toml))" \
  test "$(mode_owner /etc/plantwatch/plantwatch.toml)" = "640 root plantwatch"
check "state directory is 0700 plantwatch ($(mode_owner /var/lib/plantwatch))" \
  test "$(mode_owner /var/lib/plantwatch)" = "700 plantwatch plantwatch"
check "mqtt-password credential is 0600 root ($(mode_owner /etc/plantwatch/mqtt-password))" \
  test "$(mode_owner /etc/plantwatch/mqtt-password)" = "600 root root"
check "drop-in directory /etc/plantwatch/conf.d" test -d /etc/plantwatch/conf.d
installed_pages=$(find /usr/share/man/man1 -name 'plantwatch*.1*' | wc -l)
pages=$(find target/generated/man -name '*.1' | wc -l)
check "$installed_pages man pages installed (of $pages generated)" test "$installed_pages" -eq "$pages" -a "$pages" -gt 10
check "plantwatch-check(1) lists the exit statuses" \
  bash -c 'zcat -f /usr/share/man/man1/plantwatch-check.1* | grep -q "EXIT STATUS" && zcat -f /usr/share/man/man1/plantwatch-check.1* | grep -q "fB78"'
if command -v man >/dev/null; then
  check "man renders plantwatch-check(1)" bash -c 'man -P cat plantwatch-check 2>/dev/null | grep -q "EXIT STATUS"'
fi
for f in /usr/share/bash-completion/completions/plantwatch /usr/share/zsh/vendor-completions/_plantwatch \
  /usr/share/fish/vendor_completions.d/plantwatch.fish; do
  check "completion $f" test -s "$f"
done
if command -v bash >/dev/null; then
  check "bash loads the completion" bash -c 'source /usr/share/bash-completion/completions/plantwatch && complete -p plantwatch >/dev/null'
fi
check "docs in /usr/share/doc/plantwatch" test -f /usr/share/doc/plantwatch/payload.md -a -f /usr/share/doc/plantwatch/README.md
check "nothing enabled on install" test ! -e /etc/systemd/system/multi-user.target.wants/plantwatch.service
check "plantwatch check on the installed config, as the service user" \
  runuser -u plantwatch -- /usr/bin/plantwatch check --quiet --config /etc/plantwatch/plantwatch.toml

# An admin's edit and the daemon's data, which remove must keep and purge must delete.
echo '# edited by deb.sh' >>/etc/plantwatch/plantwatch.toml
runuser -u plantwatch -- sh -c 'echo state >/var/lib/plantwatch/state.db'

echo "dpkg -i again (the upgrade path)"
dpkg -i "$deb"
check "the admin's edit survives the reinstall" grep -q 'edited by deb.sh' /etc/plantwatch/plantwatch.toml
check "conffile still 0640 root:plantwatch" test "$(mode_owner /etc/plantwatch/plantwatch.toml)" = "640 root plantwatch"

echo "dpkg -r plantwatch"
dpkg -r plantwatch
check "binary gone" test ! -e /usr/bin/plantwatch
check "unit gone" test ! -e /usr/lib/systemd/system/plantwatch.service
check "package left as config-files" bash -c "dpkg-query -W -f='\${Status}' plantwatch | grep -q config-files"
check "the edited config stays" grep -q 'edited by deb.sh' /etc/plantwatch/plantwatch.toml
check "the state stays" test -f /var/lib/plantwatch/state.db

echo "dpkg -P plantwatch"
dpkg -P plantwatch
check "/etc/plantwatch gone" test ! -e /etc/plantwatch
check "/var/lib/plantwatch gone" test ! -e /var/lib/plantwatch
check "package gone" bash -c '! dpkg-query -W -f="\${Status}" plantwatch 2>/dev/null | grep -q installed'
echo "  (the plantwatch user stays, as Debian packages leave system users)"
trap - EXIT
echo "deb.sh: $(basename "$deb") ($(stat -c %s "$deb") bytes) installed, upgraded, removed and purged"
