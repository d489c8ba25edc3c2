# Shared by the interop scripts (sourced, not run): a temp dir, a pass/fail tally, bounded
# waits, and cleanup that stops every background process in PIDS on exit.
# Set SUITE (the summary label) and optionally STOP_TICKS (0.1 s each, before SIGKILL) first.

TMP="$(mktemp -d "${TMPDIR:-/tmp}/plantwatch-$SUITE.XXXXXX")"
TALLY="$TMP/tally"
: >"$TALLY"
PIDS=()

cleanup() {
  local pid
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do
    # Bounded: give each a few seconds to go, then SIGKILL.
    for _ in $(seq "${STOP_TICKS:-30}"); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [[ "${KEEP_TMP:-0}" == 1 ]]; then echo "$SUITE: kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() { echo "fail $1: $2" >>"$TALLY"; echo "  FAIL $1: $2"; }

summary() {
  local passed failed
  passed=$(grep -c '^pass ' "$TALLY" || true)
  failed=$(grep -c '^fail ' "$TALLY" || true)
  echo "$SUITE: $passed passed, $failed failed"
  [[ "$failed" == 0 ]]
}

die() { # a precondition failed: count it, print the summary, stop
  fail "$1" "$2"
  summary || true
  exit 1
}

# wait_until TRIES DESCRIPTION COMMAND...: poll every 0.1 s, at most TRIES times.
wait_until() {
  local tries="$1" what="$2"; shift 2
  local i
  for ((i = 0; i < tries; i++)); do
    if "$@" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "  timed out after $((tries / 10)) s waiting for $what"
  return 1
}
