#!/usr/bin/env bash
# Builds the Debian package: the gateway binary (no embedded demo broker), the man pages and
# shell completions it generates about itself, then `cargo deb` with Cargo.toml's
# [package.metadata.deb]. Prints the package's path as its last line.
#
#   packaging/build-deb.sh                    release build for this machine's architecture
#   packaging/build-deb.sh --target aarch64-unknown-linux-gnu
#                                             cross build (docs/cross-build.md)
#   packaging/build-deb.sh --profile deb-ci   the dev build copied in, quick compression: what
#                                             tests/package/deb.sh uses in CI (with --target:
#                                             an unoptimised cross build, to try a toolchain)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PROFILE=release
TARGET=
while [[ $# -gt 0 ]]; do
  case "$1" in
    --profile) PROFILE="$2"; shift 2 ;;
    --target) TARGET="$2"; shift 2 ;;
    *) echo "build-deb.sh: unknown argument '$1' (--profile P, --target TRIPLE)" >&2; exit 2 ;;
  esac
done

# cross_env TRIPLE: Debian's cross toolchain for an ARM gateway (docs/cross-build.md): the
# linker, the C compiler and archiver for ring's and the bundled SQLite's C code, and (in
# DEB_ENV, names cargo-deb reads that bash cannot export) strip and objcopy. Only what the
# caller has not set already.
DEB_ENV=()
cross_env() {
  local gnu
  case "$1" in
    aarch64-unknown-linux-gnu) gnu=aarch64-linux-gnu ;;
    armv7-unknown-linux-gnueabihf) gnu=arm-linux-gnueabihf ;;
    *) return 0 ;;
  esac
  command -v "$gnu-gcc" >/dev/null ||
    { echo "build-deb.sh: $gnu-gcc missing: apt-get install gcc-$gnu (docs/cross-build.md)" >&2; exit 1; }
  local under="${1//-/_}" var
  var="CARGO_TARGET_${under^^}_LINKER"; export "$var=${!var:-$gnu-gcc}"
  var="CC_$under"; export "$var=${!var:-$gnu-gcc}"
  var="AR_$under"; export "$var=${!var:-$gnu-ar}"
  DEB_ENV=("STRIP_$1=$gnu-strip" "OBJCOPY_$1=$gnu-objcopy")
}
[[ -n "$TARGET" ]] && cross_env "$TARGET"

TARGET_DIR="${CARGO_TARGET_DIR:-target}"
# Where `plantwatch generate` writes; [package.metadata.deb] assets name this path.
GENERATED=target/generated
target_args=()
[[ -n "$TARGET" ]] && target_args=(--target "$TARGET")

t0=$SECONDS
if [[ "$PROFILE" == deb-ci && -z "$TARGET" ]]; then
  # Cargo.toml's [profile.deb-ci]: the dev build, not rebuilt but copied where cargo-deb looks.
  cargo build --no-default-features >&2
  mkdir -p "$TARGET_DIR/deb-ci"
  cp "$TARGET_DIR/debug/plantwatch" "$TARGET_DIR/deb-ci/plantwatch"
  host_bin="$TARGET_DIR/deb-ci/plantwatch"
else
  cargo build --profile "$PROFILE" --no-default-features ${target_args[@]+"${target_args[@]}"} >&2
  if [[ -z "$TARGET" ]]; then
    host_bin="$TARGET_DIR/$PROFILE/plantwatch"
  else
    # The target's binary cannot run here; man pages and completions are the same from the
    # host's dev build of the same source.
    cargo build --no-default-features >&2
    host_bin="$TARGET_DIR/debug/plantwatch"
  fi
fi
echo "build-deb.sh: binary ($PROFILE${TARGET:+, $TARGET}) in $((SECONDS - t0))s" >&2

# Fresh each time: a page left from a renamed subcommand must not be packaged.
rm -rf "$GENERATED"
"$host_bin" generate man "$GENERATED/man" >&2
"$host_bin" generate completions "$GENERATED/completions" >&2

t0=$SECONDS
deb_args=(--no-build --profile "$PROFILE" --output "$TARGET_DIR/debian/")
# xz at its default level takes a minute on a dev binary; CI only installs the result.
[[ "$PROFILE" == deb-ci ]] && deb_args+=(--fast)
deb="$(env ${DEB_ENV[@]+"${DEB_ENV[@]}"} cargo deb "${deb_args[@]}" ${target_args[@]+"${target_args[@]}"} | tail -n 1)"
[[ -f "$deb" ]] || { echo "build-deb.sh: cargo deb printed no package path (got: '$deb')" >&2; exit 1; }
echo "build-deb.sh: $deb ($(stat -c %s "$deb") bytes) in $((SECONDS - t0))s" >&2
echo "$deb"
