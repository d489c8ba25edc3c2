#!/usr/bin/env bash
# The anomaly rule on real labelled recordings, in a quick mode, so a regression turns CI red:
# reads SKAB (github.com/waico/SKAB, pinned commit, GPL-3.0 data) beside the checkout or
# downloads it to a cache outside it, never into it; installs its scorer tsad, and runs
# benches/anomaly.rs on the first two experiments of each folder plus the fault-free run,
# with floors a little below today's
# figures: the device model (quick mode measured 2.03 false episodes per device per 10k
# normal samples, F1 0.70, NAB standard 37.72 on score onsets), then a model per point (0.64
# per point per 10k, F1 0.74, NAB 21.29 on score onsets).
#
#   tests/interop/skab.sh      (PLANTWATCH_SKAB_DIR=... skips the download)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
COMMIT=b2c0d46c2971dcbfe71e26087b6d231998bb91c2

missing() {
  if [[ "${CI:-}" == "true" ]]; then echo "skab: $1 missing" >&2; exit 1; fi
  echo "skab: skipped, $1 missing"; exit 0
}

"$PY" -m pip install -q --no-deps tsad >/dev/null 2>&1 || missing "pip install tsad"
"$PY" -m pip install -q numpy pandas matplotlib >/dev/null 2>&1 || missing "pip install numpy pandas matplotlib"
"$PY" -c 'from tsad.utils.evaluating.evaluating import evaluating' || missing "tsad"

# The team's machines and CI keep labelled datasets in a folder beside the checkout; CI's
# network reaches the package registries only, so the download below is for other machines.
BESIDE="$ROOT/../shared/datasets/skab/data"
if [[ -z "${PLANTWATCH_SKAB_DIR:-}" && -d "$BESIDE" ]]; then
  export PLANTWATCH_SKAB_DIR="$BESIDE"
fi
if [[ -z "${PLANTWATCH_SKAB_DIR:-}" ]]; then
  # A cache outside the checkout: the GPL data never sits in the repository's tree.
  DEST="${XDG_CACHE_HOME:-$HOME/.cache}/plantwatch/skab-$COMMIT"
  if [[ ! -d "$DEST/data" ]]; then
    TMP="$(mktemp -d)"
    trap 'rm -rf "$TMP"' EXIT
    curl -fsSL --max-time 300 -o "$TMP/skab.tar.gz" \
      "https://codeload.github.com/waico/SKAB/tar.gz/$COMMIT" || missing "the SKAB download"
    mkdir -p "$DEST"
    tar -xzf "$TMP/skab.tar.gz" -C "$DEST" --strip-components=1 "SKAB-$COMMIT/data"
  fi
  export PLANTWATCH_SKAB_DIR="$DEST/data"
fi

PLANTWATCH_SKAB_QUICK=1 PLANTWATCH_SKAB_MODEL=device \
  PLANTWATCH_SKAB_MAX_FALSE=2.5 PLANTWATCH_SKAB_MIN_F1=0.67 PLANTWATCH_SKAB_MIN_NAB=35 \
  cargo bench --bench anomaly --profile dev
PLANTWATCH_SKAB_QUICK=1 PLANTWATCH_SKAB_MODEL=point \
  PLANTWATCH_SKAB_MAX_FALSE=1.0 PLANTWATCH_SKAB_MIN_F1=0.70 PLANTWATCH_SKAB_MIN_NAB=19 \
  cargo bench --bench anomaly --profile dev
