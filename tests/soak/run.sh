#!/usr/bin/env bash
# The fault soak (issue 20): the whole campaign against one daemon for SOAK_SECONDS, then the
# figures per device from a persistent subscriber, and a verdict.
#
#   sudo SOAK_SECONDS=1800 tests/soak/run.sh        (180 s by default; .ci/run runs 180)
#
# Each cycle of the campaign: a SIGKILL loop of the daemon, a broker SIGKILL, a command flood
# (a thousand commands, unknown names, an oversized and a retained one), a broker outage, a
# full disk (a filler file takes the rest of the state's tmpfs), and a lost WAL (SIGKILL, then
# the -wal file removed). A rogue Modbus server (tests/soak/rogue_modbus.py, a new misbehaviour
# per connection) is one of the devices all along. The subscriber (tests/soak/subscriber.py:
# paho-mqtt, QoS 1, clean_session false) records every (device, seq, ts, values), and
# tests/soak/analyse.py prints lost, duplicate, reused-seq and out-of-order counts per device.
#
# It fails on: a loss beyond what plantwatch_outbox_dropped_total counted, a reused seq, a seq
# jump without a WAL loss the daemon reported (plantwatch_store_losses_total), a daemon that
# died on its own, or an outbox that does not drain at the end.
#
# Needs root (the state on a tmpfs), mosquitto, mosquitto_pub, python3 with paho-mqtt, and
# target/debug/plantwatch (built if missing). Without root it skips, except under CI=true.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
BIN="${PLANTWATCH_BIN:-$ROOT/target/debug/plantwatch}"
MOSQUITTO="${MOSQUITTO:-/usr/sbin/mosquitto}"
SOAK_SECONDS="${SOAK_SECONDS:-180}"
DEVICES="${DEVICES:-8}"
OUTAGE_SECONDS="${OUTAGE_SECONDS:-15}"
FULL_SECONDS="${FULL_SECONDS:-10}"
TMPFS_SIZE="${TMPFS_SIZE:-8m}"
SOAK_DIR="$ROOT/tests/soak"

SUITE=soak
STOP_TICKS=100
# shellcheck source=tests/interop/lib.sh
source "$ROOT/tests/interop/lib.sh"

pass() { echo "pass $1" >>"$TALLY"; echo "  ok   $1"; }
alive() { kill -0 "$1" 2>/dev/null; }
port_open() { timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
note() { echo "  $(date -u +%T) $*"; }

if [[ $EUID -ne 0 ]]; then
  [[ "${CI:-}" != true ]] || die "prerequisites" "needs root to mount a tmpfs"
  echo "$SUITE: skipped (needs root to mount a tmpfs)"
  exit 0
fi
for tool in "$MOSQUITTO" mosquitto_pub python3 timeout curl; do
  command -v "$tool" >/dev/null || die "prerequisites" "$tool is missing"
done
python3 -c 'import paho.mqtt.client' 2>/dev/null || die "prerequisites" "python3 paho-mqtt is missing"
if [[ ! -x "$BIN" ]]; then
  cargo build --quiet || die "prerequisites" "cargo build failed"
fi

MNT="$TMP/state"
DAEMON="" BROKER=""
# On exit: stop the processes (the daemon holds files on the tmpfs), unmount, then lib.sh's
# cleanup.
finish() {
  local pid
  for pid in $DAEMON $BROKER ${PIDS[@]+"${PIDS[@]}"}; do kill "$pid" 2>/dev/null || true; done
  for pid in $DAEMON $BROKER ${PIDS[@]+"${PIDS[@]}"}; do
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if mountpoint -q "$MNT"; then umount "$MNT" || umount -l "$MNT" || true; fi
  cleanup
}
mkdir -p "$MNT"
trap finish EXIT
mount -t tmpfs -o "size=$TMPFS_SIZE" tmpfs "$MNT"

# --- the devices: simulated PLCs, and one rogue server ----------------------------------------
"$BIN" simulate --profile generic-plc --count "$DEVICES" --listen 127.0.0.1:0 \
  --write-config "$TMP/sim.toml" </dev/null >"$TMP/sim.log" 2>&1 &
SIM=$!
PIDS+=("$SIM")
sim_ready() { alive "$SIM" && grep -q 'ready' "$TMP/sim.log" && [[ -s "$TMP/sim.toml" ]]; }
wait_until 150 "the simulator" sim_ready || die "simulator starts" "$(tail -c 1500 "$TMP/sim.log")"
python3 "$SOAK_DIR/rogue_modbus.py" "$TMP/rogue.port" >"$TMP/rogue.log" 2>&1 &
PIDS+=("$!")
wait_until 100 "the rogue Modbus server" test -s "$TMP/rogue.port" \
  || die "rogue server starts" "$(cat "$TMP/rogue.log")"

BROKER_PORT="$(free_port)"
METRICS_PORT="$(free_port)"
awk '/^poll_interval_ms *=/ {next} {print} /^\[\[devices\]\]$/ {print "poll_interval_ms = 500"}' \
  "$TMP/sim.toml" >"$TMP/plantwatch.toml"
printf '%s\n' "" "[[links]]" 'name = "rogue"' 'kind = "tcp"' 'host = "127.0.0.1"' \
  "port = $(cat "$TMP/rogue.port")" "" "[[devices]]" 'name = "rogue"' 'link = "rogue"' \
  "unit_id = 1" 'profile = "generic-plc"' "poll_interval_ms = 500" "" "[mqtt]" \
  'host = "127.0.0.1"' "port = $BROKER_PORT" 'topic_prefix = "soak"' "reconnect_min_ms = 200" \
  "reconnect_max_ms = 1000" "" "[store]" "path = \"$MNT/state.db\"" >>"$TMP/plantwatch.toml"
"$BIN" check --config "$TMP/plantwatch.toml" >"$TMP/check.log" 2>&1 || die "config" "$(tail -c 1500 "$TMP/check.log")"

# --- the broker: persistent, so the subscriber's queue outlives a broker kill ------------------
mkdir -p "$TMP/mosquitto"
printf '%s\n' "user $(id -un)" "persistence true" "persistence_location $TMP/mosquitto/" \
  "autosave_interval 1" "autosave_on_changes true" "max_queued_messages 0" \
  "log_dest file $TMP/mosquitto.log" "listener $BROKER_PORT 127.0.0.1" "allow_anonymous true" \
  >"$TMP/mosquitto.conf"
start_broker() {
  "$MOSQUITTO" -c "$TMP/mosquitto.conf" >>"$TMP/mosquitto.out" 2>&1 &
  BROKER=$!
  wait_until 100 "mosquitto" port_open "$BROKER_PORT" || die "mosquitto starts" "$(tail -5 "$TMP/mosquitto.out")"
}
stop_broker() { # SIGNAL
  kill "-$1" "$BROKER" 2>/dev/null || true
  wait "$BROKER" 2>/dev/null || true
  BROKER=""
}
start_broker

python3 "$SOAK_DIR/subscriber.py" 127.0.0.1 "$BROKER_PORT" 'soak/telemetry/#' "$TMP/received" \
  >"$TMP/subscriber.log" 2>&1 &
SUBSCRIBER=$!
PIDS+=("$SUBSCRIBER")
wait_until 100 "the subscriber" grep -q connected "$TMP/subscriber.log" \
  || die "subscriber connects" "$(cat "$TMP/subscriber.log")"

# --- the daemon, and what it counts ------------------------------------------------------------
metric() { curl -s --max-time 5 "http://127.0.0.1:$METRICS_PORT/metrics" | awk -v n="$1" '$1 == n {print $2}'; }
metrics_up() { [[ -n "$(metric plantwatch_outbox_rows)" ]]; }
metric_is() { [[ "$(metric "$1")" == "$2" ]]; }
LIFE=0 KILLS=0 BROKER_KILLS=0 OUTAGES=0 FULLS=0 WAL_CUTS=0 WAL_REPORTED=0 FLOODS=0
COUNTED_DROPS=0 LIFE_DROPS0=0

start_daemon() {
  LIFE=$((LIFE + 1))
  echo "=== life $LIFE" >>"$TMP/daemon.log"
  NO_COLOR=1 RUST_LOG="${RUST_LOG:-info,rumqttc=warn}" "$BIN" run --config "$TMP/plantwatch.toml" \
    --metrics-listen "127.0.0.1:$METRICS_PORT" </dev/null >/dev/null 2>>"$TMP/daemon.log" &
  DAEMON=$!
  wait_until 300 "the daemon's metrics" metrics_up \
    || die "daemon starts (life $LIFE)" "$(tail -20 "$TMP/daemon.log")"
  LIFE_DROPS0="$(metric plantwatch_outbox_dropped_total)"
}
# Adds up the drops this life counted so far (a lost WAL may set the persisted counter back,
# so each life counts from where it started).
count_drops() {
  local now
  now="$(metric plantwatch_outbox_dropped_total)"
  if [[ -n "$now" ]]; then
    COUNTED_DROPS=$((COUNTED_DROPS + ${now%.*} - ${LIFE_DROPS0%.*}))
    LIFE_DROPS0="$now"
  fi
}
check_alive() {
  alive "$DAEMON" || die "the daemon is alive (life $LIFE)" "$(tail -20 "$TMP/daemon.log")"
}
kill_daemon() {
  check_alive
  count_drops
  kill -9 "$DAEMON"
  wait "$DAEMON" 2>/dev/null || true
  KILLS=$((KILLS + 1))
}

command_flood() {
  check_alive
  local topic=soak/cmd i
  for i in $(seq 1000); do echo "{\"id\":$i}"; done \
    | timeout 60 mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" -q 1 -t "$topic/list" -l
  for i in $(seq 200); do printf '{"id":"x%d","note":"\u202e%s"}\n' "$i" "$(head -c 2000 /dev/zero | tr '\0' x)"; done \
    | timeout 60 mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" -q 1 -t "$topic/nonsense" -l
  head -c 200000 /dev/zero | tr '\0' 'a' >"$TMP/big"
  timeout 30 mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" -q 1 -t "$topic/list" -f "$TMP/big"
  timeout 30 mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" -q 1 -r -t "$topic/serviced" -m '{"id":"retained"}'
  sleep 2
  timeout 30 mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" -q 1 -r -n -t "$topic/serviced"
  FLOODS=$((FLOODS + 1))
}

disk_full() {
  check_alive
  # Only ever inside the tmpfs mounted above.
  mountpoint -q "$MNT" || die "the state's tmpfs is mounted" "$MNT"
  dd if=/dev/zero of="$MNT/filler" bs=64k 2>/dev/null || true
  note "disk full: $(df -h "$MNT" | tail -1)"
  sleep "$FULL_SECONDS"
  check_alive
  rm -f "$MNT/filler"
  FULLS=$((FULLS + 1))
  # /metrics reads the store's health every few seconds.
  wait_until 300 "the full condition to end" metric_is plantwatch_store_disk_full 0 \
    || fail "the full condition ends once space returns" "$(grep -i 'file system' "$TMP/daemon.log" | tail -3)"
}

wal_loss() {
  local before after
  before="$(metric plantwatch_store_losses_total)"
  kill_daemon
  rm -f "$MNT/state.db-wal"
  WAL_CUTS=$((WAL_CUTS + 1))
  start_daemon
  # /metrics reads the store's health every few seconds.
  reported() { after="$(metric plantwatch_store_losses_total)"; (( ${after:-0} > ${before:-0} )); }
  if wait_until 100 "the lost WAL in /metrics" reported; then
    WAL_REPORTED=$((WAL_REPORTED + 1))
  else
    fail "the lost WAL is reported" "plantwatch_store_losses_total $after, was $before"
  fi
}

cycle() {
  local i
  for i in 1 2 3; do sleep 3; kill_daemon; start_daemon; done
  note "SIGKILL loop: $KILLS kills so far"
  sleep 3
  stop_broker KILL
  BROKER_KILLS=$((BROKER_KILLS + 1))
  sleep 1
  start_broker
  note "broker SIGKILLed and back"
  sleep 3
  command_flood
  note "command flood sent"
  sleep 2
  stop_broker TERM
  OUTAGES=$((OUTAGES + 1))
  sleep "$OUTAGE_SECONDS"
  start_broker
  note "broker outage of ${OUTAGE_SECONDS}s over"
  sleep 3
  disk_full
  note "disk full for ${FULL_SECONDS}s, and space back"
  sleep 3
  wal_loss
  note "WAL lost ($WAL_REPORTED of $WAL_CUTS reported)"
  sleep 3
}

start_daemon
T0=$SECONDS
note "campaign for ${SOAK_SECONDS}s: $DEVICES simulated PLCs and a rogue server, every 500 ms"
n=0
while (( n == 0 || SECONDS - T0 < SOAK_SECONDS )); do
  n=$((n + 1))
  cycle
  note "cycle $n done after $((SECONDS - T0))s"
done

# --- the end: everything is delivered, then the figures ----------------------------------------
check_alive
if wait_until 1200 "the outbox to drain" metric_is plantwatch_outbox_rows 0; then
  pass "the outbox drained"
else
  fail "the outbox drained" "$(metric plantwatch_outbox_rows) rows left"
fi
count_drops
kill -TERM "$DAEMON"
for _ in $(seq 300); do alive "$DAEMON" || break; sleep 0.1; done
if alive "$DAEMON"; then fail "the daemon stops on SIGTERM" "still running"; else pass "the daemon stops on SIGTERM"; fi
wait "$DAEMON" 2>/dev/null || true
DAEMON=""
# The subscriber takes what is still on its way.
settled() {
  local a b
  a="$(wc -l <"$TMP/received")"
  sleep 1
  b="$(wc -l <"$TMP/received")"
  [[ "$a" == "$b" ]]
}
wait_until 30 "the subscriber to settle" settled || true
log() { sed 's/\x1b\[[0-9;]*m//g' "$TMP/daemon.log"; }
echo "  campaign: $n cycles in $((SECONDS - T0)) s; $LIFE daemon starts, $KILLS SIGKILLs, $BROKER_KILLS broker SIGKILLs,"
echo "    $OUTAGES outages of $OUTAGE_SECONDS s, $FULLS full disks of $FULL_SECONDS s, $WAL_CUTS WAL losses ($WAL_REPORTED reported),"
echo "    $FLOODS command floods; log: $(log | grep -c ' ERROR ' || true) ERROR and $(log | grep -c ' WARN ' || true) WARN lines"
if python3 "$SOAK_DIR/analyse.py" "$TMP/received" "$COUNTED_DROPS" "$WAL_REPORTED"; then
  pass "no loss beyond the counted drops, no reused seq"
else
  fail "no loss beyond the counted drops, no reused seq" "see the figures above"
fi
summary
