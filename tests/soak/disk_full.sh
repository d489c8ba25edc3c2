#!/usr/bin/env bash
# Disk full, for real (issue 20): the state file on a small tmpfs, 20 simulated devices polled
# every 200 ms, no broker. Needs root (mount), mosquitto and mosquitto_sub, and
# target/debug/plantwatch (built if missing). Run by .ci/run; by hand:
#
#   sudo tests/soak/disk_full.sh        (TMPFS_SIZE=4m and FILL_SECONDS=20 by default)
#
# What it checks:
# 1. The daemon's own growth fills the file system: the oldest messages are dropped and counted
#    (plantwatch_outbox_dropped_total), no store write fails, /metrics shows the full condition,
#    and the log has one WARN for it, not an ERROR per batch.
# 2. Another process takes the rest of the space: the daemon keeps storing, and once a broker
#    is up, delivered rows are deleted (the outbox drains) while the disk is still full.
# 3. Space returns: one WARN says so, and the subscriber saw no (device, seq) twice.
# Every wait is bounded; the mount and every background process go on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
BIN="${PLANTWATCH_BIN:-$ROOT/target/debug/plantwatch}"
MOSQUITTO="${MOSQUITTO:-/usr/sbin/mosquitto}"
TMPFS_SIZE="${TMPFS_SIZE:-4m}"
FILL_SECONDS="${FILL_SECONDS:-20}"
# FILLER=0 leaves out case 2's filler file (the disk then fills only by the daemon's own growth).
FILLER="${FILLER:-1}"

SUITE=disk-full
STOP_TICKS=50
# shellcheck source=tests/interop/lib.sh
source "$ROOT/tests/interop/lib.sh"

pass() { echo "pass $1" >>"$TALLY"; echo "  ok   $1"; }
alive() { kill -0 "$1" 2>/dev/null; }
port_open() { timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

MNT="$TMP/state"
# On exit: stop the processes (they hold files on the tmpfs), unmount, then lib.sh's cleanup.
finish() {
  local pid
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do kill "$pid" 2>/dev/null || true; done
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if mountpoint -q "$MNT"; then umount "$MNT" || umount -l "$MNT" || true; fi
  cleanup
}

if [[ $EUID -ne 0 ]]; then
  [[ "${CI:-}" != true ]] || die "prerequisites" "needs root to mount a tmpfs"
  echo "$SUITE: skipped (needs root to mount a tmpfs)"
  exit 0
fi
for tool in "$MOSQUITTO" mosquitto_sub python3 timeout curl; do
  command -v "$tool" >/dev/null || die "prerequisites" "$tool is missing"
done
if [[ ! -x "$BIN" ]]; then
  cargo build --quiet || die "prerequisites" "cargo build failed"
fi

mkdir -p "$MNT"
trap finish EXIT
mount -t tmpfs -o "size=$TMPFS_SIZE" tmpfs "$MNT"

# --- 20 devices at 200 ms, a broker port that is closed for now ----------------------------
"$BIN" simulate --profile generic-plc --count 20 --listen 127.0.0.1:0 \
  --write-config "$TMP/sim.toml" --duration 600 </dev/null >"$TMP/sim.log" 2>&1 &
SIM=$!
PIDS+=("$SIM")
sim_ready() { alive "$SIM" && grep -q 'ready' "$TMP/sim.log" && [[ -s "$TMP/sim.toml" ]]; }
wait_until 150 "the simulator" sim_ready || die "simulator starts" "$(tail -c 1500 "$TMP/sim.log")"

BROKER_PORT="$(free_port)"
METRICS_PORT="$(free_port)"
# One poll_interval_ms per device, 200 ms.
awk '/^poll_interval_ms *=/ {next} {print} /^\[\[devices\]\]$/ {print "poll_interval_ms = 200"}' \
  "$TMP/sim.toml" >"$TMP/plantwatch.toml"
cat >>"$TMP/plantwatch.toml" <<EOF

[mqtt]
host = "127.0.0.1"
port = $BROKER_PORT
topic_prefix = "full"
reconnect_min_ms = 200
reconnect_max_ms = 1000

[store]
path = "$MNT/state.db"
EOF
"$BIN" check --config "$TMP/plantwatch.toml" >"$TMP/check.log" 2>&1 || die "config" "$(tail -c 1500 "$TMP/check.log")"

NO_COLOR=1 RUST_LOG="${RUST_LOG:-info,rumqttc=warn}" "$BIN" run --config "$TMP/plantwatch.toml" \
  --metrics-listen "127.0.0.1:$METRICS_PORT" </dev/null >/dev/null 2>"$TMP/daemon.log" &
DAEMON=$!
PIDS+=("$DAEMON")

log() { sed 's/\x1b\[[0-9;]*m//g' "$TMP/daemon.log"; }
count() { log | grep -c -e "$1" || true; }
metric() { curl -s --max-time 5 "http://127.0.0.1:$METRICS_PORT/metrics" | awk -v n="$1" '$1 == n {print $2}'; }
metric_is() { [[ "$(metric "$1")" == "$2" ]]; }
metric_above() { local v; v="$(metric "$1")"; [[ -n "$v" ]] && (( ${v%.*} > $2 )); }

# --- 1. the daemon's own growth fills the tmpfs -----------------------------------------------
wait_until 1800 "the full condition" metric_is plantwatch_store_disk_full 1 \
  || die "the disk fills" "$(df -h "$MNT"; log | tail -20)"
sleep "$FILL_SECONDS"
df -h "$MNT" | tail -1
DROPPED="$(metric plantwatch_outbox_dropped_total)"
FAILED="$(metric plantwatch_store_write_failures_total)"
ROWS="$(metric plantwatch_outbox_rows)"
echo "  full: $ROWS rows kept, $DROPPED dropped, $FAILED failed writes"
if (( DROPPED > 0 )); then pass "drops are counted ($DROPPED)"; else fail "drops are counted" "0"; fi
if [[ "$FAILED" == 0 ]]; then pass "no store write failed"; else fail "no store write failed" "$FAILED"; fi
n="$(count 'State file system full')"
if [[ "$n" == 1 ]]; then pass "one WARN entering the full condition"; else fail "one WARN entering" "$n"; fi
n="$(count ' ERROR ')"
if [[ "$n" == 0 ]]; then pass "no ERROR lines"; else fail "no ERROR lines" "$(log | grep ' ERROR ' | head -5)"; fi

# --- 2. another process takes the rest (unless FILLER=0); then a broker comes ---------------------
if [[ "$FILLER" == 1 ]]; then
  dd if=/dev/zero of="$MNT/filler" bs=64k 2>/dev/null || true
  echo "  filler: $(du -h "$MNT/filler" | cut -f1), df: $(df -h "$MNT" | tail -1)"
  sleep 3
  alive "$DAEMON" || die "the daemon survives a filled disk" "$(log | tail -20)"
fi

cat >"$TMP/mosquitto.conf" <<EOF
user $(id -un)
persistence false
log_dest file $TMP/mosquitto.log
listener $BROKER_PORT 127.0.0.1
allow_anonymous true
EOF
"$MOSQUITTO" -c "$TMP/mosquitto.conf" >"$TMP/mosquitto.out" 2>&1 &
PIDS+=("$!")
wait_until 100 "mosquitto" port_open "$BROKER_PORT" || die "mosquitto starts" "$(cat "$TMP/mosquitto.out")"
mosquitto_sub -h 127.0.0.1 -p "$BROKER_PORT" -q 1 -t 'full/telemetry/#' >"$TMP/received" 2>"$TMP/sub.log" &
PIDS+=("$!")

drained() { local r; r="$(metric plantwatch_outbox_rows)"; [[ -n "$r" ]] && (( r < 200 )); }
if wait_until 1200 "the outbox to drain with the disk still full" drained; then
  pass "delivered rows are deleted ($(metric plantwatch_outbox_rows) rows left)"
else
  fail "delivered rows are deleted" "$(metric plantwatch_outbox_rows) rows; $(log | tail -10)"
fi

# --- 3. space returns ----------------------------------------------------------------------
rm -f "$MNT/filler"
# The filler may start a second full condition (SQLite found no room for the WAL); each one
# has its WARN in and its WARN out, never one per batch.
left() {
  local in out
  in="$(count 'State file system full')"
  out="$(count 'State file system has room again')"
  [[ "$out" -ge 1 && "$out" == "$in" && "$in" -le 3 ]]
}
if wait_until 300 "the full condition to end" left; then
  pass "one WARN leaving each full condition ($(count 'State file system has room again'))"
else
  fail "one WARN leaving each full condition" "$(log | grep -i 'full' | tail -5)"
fi
# /metrics reads the store's health every few seconds.
if wait_until 150 "/metrics to show the disk no longer full" metric_is plantwatch_store_disk_full 0; then
  pass "/metrics shows the disk no longer full"
else
  fail "/metrics shows the disk no longer full" "$(metric plantwatch_store_disk_full)"
fi
sleep 2
DUPES="$(python3 - "$TMP/received" <<'EOF'
import json, sys, collections
seen = collections.Counter()
for line in open(sys.argv[1], errors="replace"):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    seen[(m.get("device"), m.get("seq"))] += 1
print(sum(n - 1 for n in seen.values() if n > 1), len(seen))
EOF
)"
read -r dup total <<<"$DUPES"
echo "  subscriber: $total distinct (device, seq), $dup sent twice"
if [[ "$dup" == 0 && "$total" -gt 0 ]]; then pass "nothing delivered was sent again"; else
  fail "nothing delivered was sent again" "$dup duplicates of $total"; fi
alive "$DAEMON" && pass "the daemon kept running" || fail "the daemon kept running" "$(log | tail -20)"
summary
