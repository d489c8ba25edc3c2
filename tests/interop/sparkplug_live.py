#!/usr/bin/env python3
"""Play a Sparkplug B primary host against a live edge node and judge what it publishes.

Usage: sparkplug_live.py --port PORT [--host 127.0.0.1] [--group plant] [--node gw-01]
                         [--host-id scada] [--min-ddata 6] [--offline-s 2] [--timeout 60]
                         [--await-ndeath-s 0] [--no-qos-check]

Connects to the broker with paho-mqtt (1.6.1 API), subscribes to spBv1.0/#, and plays the
primary host `--host-id` of Sparkplug 3.0: its will and its STATE messages are the JSON
{"online":…,"timestamp":…}, retained, QoS 1. The edge node under test (plantwatch's Sparkplug
sink, with primary_host_id = the same id) should already be connected and storing polls, or
start within the timeout. The script:

  1. publishes STATE offline, waits --offline-s (the node must not birth; its polls queue up);
  2. publishes STATE online: expects NBIRTH, DBIRTHs, then the queued polls as historical DDATA
     and at least --min-ddata live DDATA;
  3. publishes STATE offline, waits --offline-s, publishes STATE online again: expects fresh
     births and the polls of the outage as historical DDATA, then live DDATA;
  4. sends NCMD Node Control/Rebirth: expects an NBIRTH with the same bdSeq;
  5. with --await-ndeath-s N > 0, prints "phase: awaiting NDEATH" and waits up to N s for the
     node's NDEATH (stop or kill the node then: a kill makes the broker publish the will);
  6. leaves STATE offline (retained) and exits.

QoS as received is min(published, subscribed = 1), so on a conforming broker (mosquitto) births
and data arrive at QoS 0 and the NDEATH at QoS 1; --no-qos-check skips that check for brokers
that forward at the subscription's QoS (rumqttd, plantwatch's embedded broker).

Every message is decoded with pysparkplug (an independent implementation), data messages
against the latest DBIRTH of their device, as a host application would. Prints one line per
check (PASS/FAIL and a summary) and exits 0 when all pass, 1 otherwise (2 on bad usage or when
the broker cannot be reached).
"""

import argparse
import collections
import json
import queue
import sys
import time

import paho.mqtt.client as mqtt
import pysparkplug as sp
from pysparkplug import _protobuf as pb


def now_ms():
    return int(time.time() * 1000)


# One received message of the node; `payload` is None (and `error` set) if it did not decode.
Msg = collections.namedtuple("Msg", "arrived kind topic payload wire error qos")


class Observer:
    """Receives and decodes; every check reads from what is recorded here."""

    def __init__(self, args):
        self.args = args
        self.inbox = queue.Queue()
        self.messages = []  # Msg, in arrival order
        self.births = {}  # (group, node, device) -> latest birth payload
        self.errors = []

    def on_message(self, _client, _userdata, msg):
        self.inbox.put((now_ms(), msg.topic, bytes(msg.payload), msg.qos))

    def drain(self, until_ms, stop=None):
        """Records messages until `until_ms`, or earlier once `stop()` holds."""
        while True:
            if stop is not None and stop():
                return True
            left = until_ms - now_ms()
            if left <= 0:
                return False
            try:
                arrived, topic, raw, qos = self.inbox.get(timeout=min(left, 200) / 1000)
            except queue.Empty:
                continue
            self.record(arrived, topic, raw, qos)

    def record(self, arrived, topic, raw, qos):
        if topic.startswith("spBv1.0/STATE/"):
            return
        try:
            t = sp.Topic.from_str(topic)
        except Exception as e:  # noqa: BLE001 - any parse failure is a finding
            self.errors.append(f"{topic}: topic does not parse: {e}")
            return
        if t.group_id != self.args.group or t.edge_node_id != self.args.node:
            return
        kind = t.message_type
        if kind in (sp.MessageType.NCMD, sp.MessageType.DCMD):
            return  # the host's own commands
        key = (t.group_id, t.edge_node_id, t.device_id)
        wire = None
        try:
            wire = pb.Payload.FromString(raw)
            if kind == sp.MessageType.NDEATH:
                payload = sp.NDeath.decode(raw)
            elif kind in (sp.MessageType.NBIRTH, sp.MessageType.DBIRTH):
                payload = kind.payload.decode(raw)
                self.births[key] = payload
            elif kind in (sp.MessageType.DDATA, sp.MessageType.NDATA):
                birth = self.births.get(key)
                if birth is None:
                    raise ValueError("data before any birth of its device")
                payload = kind.payload.decode(raw, birth=birth)
            else:
                payload = kind.payload.decode(raw)
            self.messages.append(Msg(arrived, kind, topic, payload, wire, None, qos))
        except Exception as e:  # noqa: BLE001 - an undecodable message is a finding
            self.messages.append(Msg(arrived, kind, topic, None, wire, str(e), qos))

    def count(self, kind, since=0, historical=None):
        n = 0
        for m in self.messages:
            if m.kind != kind or m.arrived < since or m.payload is None:
                continue
            if historical is not None:
                flags = {x.is_historical for x in m.payload.metrics}
                if flags != {historical}:
                    continue
            n += 1
        return n


class Checks:
    def __init__(self):
        self.results = []

    def check(self, name, ok, detail):
        self.results.append((name, bool(ok), detail))

    def report(self):
        for name, ok, detail in self.results:
            print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}")
        failed = [n for n, ok, _ in self.results if not ok]
        print(f"pysparkplug {sp.__version__}: {len(self.results) - len(failed)}/"
              f"{len(self.results)} checks passed")
        return 1 if failed else 0


def state(client, host_id, online):
    info = client.publish(f"spBv1.0/STATE/{host_id}",
                          json.dumps({"online": online, "timestamp": now_ms()}),
                          qos=1, retain=True)
    info.wait_for_publish(timeout=10)
    return now_ms()


def rebirth(client, group, node):
    ncmd = pb.Payload()
    ncmd.timestamp = now_ms()
    m = ncmd.metrics.add()
    m.name = "Node Control/Rebirth"
    m.datatype = int(sp.DataType.BOOLEAN)
    m.boolean_value = True
    info = client.publish(f"spBv1.0/{group}/NCMD/{node}", ncmd.SerializeToString(), qos=1)
    info.wait_for_publish(timeout=10)
    return now_ms()


def bd_seq_of(payload):
    for m in payload.metrics:
        if m.name == "bdSeq":
            return m.value
    return None


def judge(obs, phases, checks, qos_check):
    msgs = obs.messages
    ok_msgs = [m for m in msgs if m.payload is not None]
    undecodable = [(m.topic, m.error) for m in msgs if m.payload is None]
    fine = not undecodable and not obs.errors
    checks.check("decode", fine,
                 f"{len(msgs)} messages decoded by pysparkplug" if fine
                 else f"undecodable: {undecodable[:3]} {obs.errors[:3]}")

    nbirths = [m for m in ok_msgs if m.kind == sp.MessageType.NBIRTH]
    bad = []
    for m in nbirths:
        names = {x.name: x for x in m.payload.metrics}
        bd = names.get("bdSeq")
        rb = names.get("Node Control/Rebirth")
        if bd is None or bd.datatype != sp.DataType.INT64:
            bad.append("no Int64 bdSeq")
        if rb is None or rb.datatype != sp.DataType.BOOLEAN:
            bad.append("no Boolean Node Control/Rebirth")
        if m.payload.seq != 0:
            bad.append(f"seq {m.payload.seq}")
    checks.check("nbirth", nbirths and not bad,
                 f"{len(nbirths)} NBIRTH with bdSeq, Node Control/Rebirth, seq 0"
                 if nbirths and not bad else f"{len(nbirths)} NBIRTH; {bad[:3]}")

    dbirths = [m for m in ok_msgs if m.kind == sp.MessageType.DBIRTH]
    bad = []
    for m in dbirths:
        aliases = [x.alias for x in m.payload.metrics]
        if len(set(aliases)) != len(aliases) or None in aliases:
            bad.append(f"{m.topic}: aliases {aliases}")
        for raw in m.wire.metrics:
            if not raw.HasField("name") or not raw.HasField("datatype"):
                bad.append(f"{m.topic}: a metric without name or datatype")
    checks.check("dbirth", dbirths and not bad,
                 f"{len(dbirths)} DBIRTH, every metric with name, datatype and a unique alias"
                 if dbirths and not bad else f"{len(dbirths)} DBIRTH; {bad[:3]}")

    ddata = [m for m in ok_msgs if m.kind == sp.MessageType.DDATA]
    bad = []
    for m in ddata:
        for x, raw in zip(m.payload.metrics, m.wire.metrics):
            if not raw.HasField("alias") or raw.HasField("name"):
                bad.append(f"{m.topic}: a metric not by alias alone")
            if x.name is None:
                bad.append(f"{m.topic}: alias {x.alias} unknown to the DBIRTH")
    checks.check("ddata_aliases", ddata and not bad,
                 f"{len(ddata)} DDATA, every metric by an alias its DBIRTH declared"
                 if ddata and not bad else f"{len(ddata)} DDATA; {bad[:3]}")

    bad = []
    expected = None
    seen = 0
    for m in ok_msgs:
        if m.kind == sp.MessageType.NDEATH:
            continue
        seen += 1
        if m.kind == sp.MessageType.NBIRTH:
            expected = 1
            continue
        if expected is not None and m.payload.seq != expected:
            bad.append(f"{m.topic}: seq {m.payload.seq}, expected {expected}")
        expected = (m.payload.seq + 1) % 256
    checks.check("seq", seen and not bad,
                 f"{seen} messages, seq 0 on NBIRTH and +1 mod 256 after"
                 if seen and not bad else "; ".join(bad[:3]))

    bad = []
    for start, end in phases["offline"]:
        n = sum(1 for m in nbirths if start <= m.arrived < end)
        if n:
            bad.append(f"{n} NBIRTH while offline")
    checks.check("gating", not bad,
                 f"no NBIRTH during {len(phases['offline'])} offline periods"
                 if not bad else "; ".join(bad))

    # History: after each return, historical DDATA timestamped before the births.
    bad = []
    for back in phases["online"]:
        births = [m for m in nbirths if m.arrived >= back]
        if not births:
            bad.append(f"no NBIRTH after the host came back at {back}")
            continue
        born = births[0]
        hist = [m for m in ddata if m.arrived >= born.arrived
                and all(x.is_historical for x in m.payload.metrics)]
        if not hist:
            bad.append(f"no historical DDATA after the NBIRTH at {born.arrived}")
            continue
        # Against the newest birth before each message: a rebirth (NCMD) later in the run
        # turns polls stored just before it into history too, older than that birth only.
        def birth_before(m):
            return [b for b in nbirths if b.arrived <= m.arrived][-1]
        late = [x.timestamp for m in hist for x in m.payload.metrics
                if x.timestamp > birth_before(m).payload.timestamp]
        if late:
            bad.append(f"historical metrics newer than their birth: {late[:3]}")
    checks.check("historical", not bad,
                 f"historical DDATA after each of {len(phases['online'])} returns, "
                 "timestamped before the births" if not bad else "; ".join(bad))

    last_return = phases["online"][-1] if phases["online"] else now_ms()
    live = obs.count(sp.MessageType.DDATA, since=last_return, historical=False)
    checks.check("live", live >= 1, f"{live} live DDATA after the last return")

    bad = "no rebirth sent"
    if phases["rebirth"] is not None:
        before = [m for m in nbirths if m.arrived < phases["rebirth"]]
        after = [m for m in nbirths if m.arrived >= phases["rebirth"]]
        if not after:
            bad = "no NBIRTH after NCMD Node Control/Rebirth"
        elif before and bd_seq_of(after[0].payload) != bd_seq_of(before[-1].payload):
            bad = (f"bdSeq {bd_seq_of(after[0].payload)} after the rebirth, "
                   f"{bd_seq_of(before[-1].payload)} before")
        else:
            bad = None
    checks.check("rebirth", bad is None,
                 "NCMD Node Control/Rebirth answered by an NBIRTH with the same bdSeq"
                 if bad is None else bad)

    deaths = [m for m in ok_msgs if m.kind == sp.MessageType.NDEATH]
    if phases["await_ndeath"] or deaths:
        if not deaths:
            checks.check("ndeath", False, "no NDEATH arrived")
        else:
            last_birth = [m for m in nbirths if m.arrived <= deaths[-1].arrived]
            want = bd_seq_of(last_birth[-1].payload) if last_birth else None
            got = deaths[-1].payload.bd_seq_metric.value
            checks.check("ndeath", got == want,
                         f"NDEATH with bdSeq {got}, its NBIRTH's" if got == want
                         else f"NDEATH bdSeq {got}, last NBIRTH bdSeq {want}")

    if qos_check:
        bad = [f"{m.topic}: QoS {m.qos}" for m in msgs
               if m.qos != (1 if m.kind == sp.MessageType.NDEATH else 0)]
        checks.check("qos", not bad,
                     "births and data at QoS 0, NDEATH at QoS 1" if not bad
                     else "; ".join(bad[:3]))


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--group", default="plant")
    ap.add_argument("--node", default="gw-01")
    ap.add_argument("--host-id", default="scada")
    ap.add_argument("--min-ddata", type=int, default=6)
    ap.add_argument("--offline-s", type=float, default=2.0)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--await-ndeath-s", type=float, default=0.0)
    ap.add_argument("--no-qos-check", action="store_true")
    args = ap.parse_args(argv[1:])

    obs = Observer(args)
    client = mqtt.Client(client_id=f"sparkplug-live-{args.host_id}", clean_session=True)
    client.will_set(f"spBv1.0/STATE/{args.host_id}",
                    json.dumps({"online": False, "timestamp": now_ms()}), qos=1, retain=True)
    client.on_message = obs.on_message
    try:
        client.connect(args.host, args.port, keepalive=30)
    except OSError as e:
        print(f"FAIL connect: {args.host}:{args.port}: {e}")
        return 2
    client.loop_start()
    client.subscribe("spBv1.0/#", qos=1)
    deadline = now_ms() + int(args.timeout * 1000)
    phases = {"offline": [], "online": [], "rebirth": None, "await_ndeath": False}
    checks = Checks()
    nbirth = sp.MessageType.NBIRTH
    ddata = sp.MessageType.DDATA
    try:
        # 1. Offline: polls queue up at the node.
        off = state(client, args.host_id, False)
        obs.drain(now_ms() + int(args.offline_s * 1000))
        # 2. Online: births, history, live data.
        on = state(client, args.host_id, True)
        # Data written before the node saw the STATE may still arrive: allow half a second.
        phases["offline"].append((off + 500, on))
        phases["online"].append(on)
        obs.drain(deadline, lambda: obs.count(ddata, since=on, historical=False) >= args.min_ddata)
        # 3. Offline and back.
        off = state(client, args.host_id, False)
        obs.drain(now_ms() + int(args.offline_s * 1000))
        on = state(client, args.host_id, True)
        phases["offline"].append((off + 500, on))
        phases["online"].append(on)
        obs.drain(deadline, lambda: obs.count(ddata, since=on, historical=False) >= 1)
        # 4. Rebirth.
        phases["rebirth"] = rebirth(client, args.group, args.node)
        obs.drain(deadline, lambda: obs.count(nbirth, since=phases["rebirth"]) >= 1)
        obs.drain(now_ms() + 300)
        # 5. The death, when asked for.
        if args.await_ndeath_s > 0:
            phases["await_ndeath"] = True
            print("phase: awaiting NDEATH", flush=True)
            obs.drain(now_ms() + int(args.await_ndeath_s * 1000),
                      lambda: obs.count(sp.MessageType.NDEATH) >= 1)
    finally:
        # 6. Leave the host offline for whoever comes next.
        state(client, args.host_id, False)
        client.loop_stop()
        client.disconnect()
    judge(obs, phases, checks, not args.no_qos_check)
    return checks.report()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
