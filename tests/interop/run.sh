#!/usr/bin/env bash
# Interop suite: plantwatch against pymodbus over Modbus TCP, RTU over TCP and RTU on a socat
# pty pair. Needs python3 with pymodbus + pyserial, socat, and target/debug/plantwatch (built
# if missing). Every wait is bounded; background processes are killed on exit.
#
#   tests/interop/run.sh            (from anywhere; PLANTWATCH_BIN overrides the binary)
#
# The checked-in tests/interop/pymodbus.toml carries placeholder ports and pty path; this
# script rewrites them into a temporary copy (no fixed ports).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/tests/interop"
cd "$ROOT"
BIN="${PLANTWATCH_BIN:-$ROOT/target/debug/plantwatch}"
PY="${PYTHON:-python3}"

SUITE=interop
STOP_TICKS=20
# shellcheck source=tests/interop/lib.sh
source "$ROOT/tests/interop/lib.sh"

pass() { echo "pass $1" >>"$TALLY"; }
check() { # check NAME COMMAND...: pass when the command succeeds
  local name="$1"; shift
  if "$@" >"$TMP/last.out" 2>&1; then pass "$name"; else
    fail "$name" "\`$*\` failed: $(tail -c 600 "$TMP/last.out")"; fi
}


port_open() { "$PY" - "$1" <<'EOF'
import socket, sys
s = socket.socket()
s.settimeout(0.2)
sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0 else 1)
EOF
}

alive() { kill -0 "$1"; }

echo "interop: pymodbus $("$PY" -c 'import pymodbus; print(pymodbus.__version__)' 2>/dev/null \
  || echo MISSING), $(socat -V 2>/dev/null | grep -m1 -o 'socat version [^ ]*' || echo 'socat MISSING')"
"$PY" -c 'import pymodbus, serial' 2>/dev/null \
  || die "prerequisites" "python3 needs pymodbus and pyserial: pip install 'pymodbus[serial]'"
command -v socat >/dev/null || die "prerequisites" "socat is not installed"
if [[ ! -x "$BIN" ]]; then
  cargo build --quiet || die "prerequisites" "cargo build failed"
fi

# 1. The checked-in config is what regmap.py generates, and plantwatch accepts it.
"$PY" "$HERE/regmap.py" >"$TMP/generated.toml"
check "pymodbus.toml matches regmap.py" diff -u "$HERE/pymodbus.toml" "$TMP/generated.toml"
check "plantwatch check pymodbus.toml" "$BIN" check --config "$HERE/pymodbus.toml"

# 2. A pty pair: the peer serves RTU on ttyA, plantwatch polls ttyB.
socat -d -d "pty,raw,echo=0,link=$TMP/ttyA" "pty,raw,echo=0,link=$TMP/ttyB" \
  2>"$TMP/socat.log" &
PIDS+=($!)
wait_until 50 "socat ptys" test -e "$TMP/ttyA" -a -e "$TMP/ttyB" \
  || die "socat pty pair" "$(tail -c 600 "$TMP/socat.log")"

# 3. The pymodbus peer on two free ports and the pty.
read -r TCP_PORT RTU_TCP_PORT < <("$PY" -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
for s in socks: s.close()')
"$PY" "$HERE/pymodbus_server.py" --tcp "$TCP_PORT" --rtu-over-tcp "$RTU_TCP_PORT" \
  --serial "$TMP/ttyA" >"$TMP/server.log" 2>&1 &
SERVER=$!
PIDS+=("$SERVER")
server_ready() { alive "$SERVER" && grep -q '^READY' "$TMP/server.log" \
  && port_open "$TCP_PORT" && port_open "$RTU_TCP_PORT"; }
wait_until 100 "the pymodbus peer" server_ready \
  || die "pymodbus peer starts" "$(tail -c 1500 "$TMP/server.log")"
pass "pymodbus peer starts"
echo "interop: peer $(head -1 "$TMP/server.log") on tcp $TCP_PORT, rtu-over-tcp $RTU_TCP_PORT, rtu $TMP/ttyA"

sed -e "s|port = 15020|port = $TCP_PORT|" \
    -e "s|port = 15021|port = $RTU_TCP_PORT|" \
    -e "s|/tmp/plantwatch-interop/ttyB|$TMP/ttyB|" \
    "$HERE/pymodbus.toml" >"$TMP/pymodbus.toml"

# 4. The peer serves what regmap says (raw Modbus TCP, no plantwatch involved).
"$PY" "$HERE/check.py" peer 127.0.0.1 "$TCP_PORT" "$TALLY" || true

# 5. plantwatch reads every point of every device.
for device in tcp-all rtutcp-all rtu-all tcp-gaps rtu-gaps; do
  rc=0
  timeout -k 5 60 "$BIN" read --config "$TMP/pymodbus.toml" "$device" --json \
    >"$TMP/$device.json" 2>"$TMP/$device.err" || rc=$?
  before=$(grep -c '^fail ' "$TALLY" || true)
  "$PY" "$HERE/check.py" read "$device" "$TMP/$device.json" "$rc" "$TALLY" || true
  after=$(grep -c '^fail ' "$TALLY" || true)
  echo "interop: $device: exit $rc, $(grep -c "^pass $device" "$TALLY" || true) passed, $((after - before)) failed"
  if [[ "$after" != "$before" && -s "$TMP/$device.err" ]]; then
    echo "  stderr: $(tail -c 800 "$TMP/$device.err")"
  fi
done

# 6. The peer survived everything.
if alive "$SERVER"; then pass "pymodbus peer still running"; else
  fail "pymodbus peer still running" "$(tail -c 1500 "$TMP/server.log")"; fi

summary
