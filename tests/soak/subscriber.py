#!/usr/bin/env python3
"""The fault soak's persistent subscriber: QoS 1, clean_session false, one client id for the
whole run, so the broker keeps its queue while it is away. Writes one JSON line per telemetry
message received: device, seq, ts, backfill, and the point values.

    subscriber.py HOST PORT TOPIC OUT_FILE
"""
import json
import sys

import paho.mqtt.client as mqtt

host, port, topic, out_path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
out = open(out_path, "a", buffering=1)

try:  # paho-mqtt 2
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION1, client_id="plantwatch-soak", clean_session=False)
except AttributeError:  # paho-mqtt 1
    client = mqtt.Client(client_id="plantwatch-soak", clean_session=False)


def on_connect(c, _userdata, _flags, rc):
    if rc == 0:
        c.subscribe(topic, qos=1)
        print("connected", flush=True)


def on_message(_c, _userdata, msg):
    try:
        m = json.loads(msg.payload)
        values = {k: (p.get("v") if isinstance(p, dict) else p) for k, p in (m.get("points") or {}).items()}
        rec = {"device": m.get("device"), "seq": m.get("seq"), "ts": m.get("ts"),
               "backfill": bool(m.get("backfill")), "values": values}
    except (ValueError, AttributeError):
        rec = {"unreadable": msg.topic}
    out.write(json.dumps(rec, sort_keys=True) + "\n")


client.on_connect = on_connect
client.on_message = on_message
client.reconnect_delay_set(min_delay=1, max_delay=2)
client.connect_async(host, port, keepalive=10)
client.loop_forever(retry_first_connection=True)
