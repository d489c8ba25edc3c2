#!/usr/bin/env python3
"""Decode plantwatch's Sparkplug B payloads with an independent implementation and check them.

Usage: sparkplug_decode.py DIR [DIR...]

Each DIR holds a manifest.json, written by hand or by the test that produced the payloads:

    {"messages": [{"file": "nbirth.hex", "topic": "spBv1.0/plant/NBIRTH/gw-01",
                   "timestamp": 1700000002000, "seq": 0, "bdSeq": 7,
                   "metrics": [{"name": "bdSeq", "alias": null, "datatype": "INT64",
                                "timestamp": 1700000002000, "value": 7}, ...]}, ...]}

in publish order. A file ending in .hex holds the payload as hex, anything else raw bytes.
A metric's "value": null means no value and is_null set; "is_historical" defaults to false.
"timestamp" of an NDEATH may be null (the will has none).

Decoding uses the PyPI package pysparkplug (its own generated protobuf classes and its own
datatype codecs), so a schema, wire-type or two's-complement mistake on our side shows here.
Data messages are decoded against the preceding birth of the same device, as a host
application would, so aliases and datatypes are resolved by pysparkplug, not by us. Where
pysparkplug's object model hides a field (whether a name or datatype is on the wire, an
NDEATH's timestamp: its NDeath.decode reads that field inverted), the raw protobuf message of
pysparkplug's schema is inspected instead.

Prints one line per message and exits 1 listing every mismatch.
"""

import json
import math
import pathlib
import struct
import sys

import pysparkplug as sp
from pysparkplug import _protobuf as pb

DATA = {sp.MessageType.NDATA, sp.MessageType.DDATA}
BIRTHS = {sp.MessageType.NBIRTH, sp.MessageType.DBIRTH}


def read_payload(directory, entry):
    path = directory / entry["file"]
    if path.suffix == ".hex":
        return bytes.fromhex(path.read_text().strip())
    return path.read_bytes()


def same_value(datatype, want, got):
    if want is None or got is None:
        return want is got
    if datatype == sp.DataType.FLOAT:
        # Float travels as an f32: compare at that precision, exactly.
        return struct.pack("<f", want) == struct.pack("<f", got)
    if datatype == sp.DataType.DOUBLE:
        return (math.isnan(want) and math.isnan(got)) or want == got
    return type(want) is type(got) and want == got


class Checker:
    def __init__(self):
        self.problems = []
        self.fields = 0

    def eq(self, where, what, want, got):
        self.fields += 1
        if want != got:
            self.problems.append(f"{where}: {what}: want {want!r}, got {got!r}")

    def check_metric(self, where, want, got, raw, data_message):
        dtype = sp.DataType[want["datatype"]]
        self.eq(where, "name", want["name"], got.name)
        self.eq(where, "alias", want["alias"], got.alias)
        self.eq(where, "datatype", dtype, got.datatype)
        self.eq(where, "timestamp", want["timestamp"], got.timestamp)
        self.fields += 1
        if not same_value(dtype, want["value"], got.value):
            self.problems.append(f"{where}: value: want {want['value']!r}, got {got.value!r}")
        self.eq(where, "is_null", want["value"] is None, got.is_null)
        self.eq(where, "is_historical", want.get("is_historical", False), got.is_historical)
        self.eq(where, "is_transient", False, got.is_transient)
        # Births name and type every metric; data messages carry the alias alone.
        self.eq(where, "name on the wire", not data_message, raw.HasField("name"))
        self.eq(where, "datatype on the wire", not data_message, raw.HasField("datatype"))

    def check_directory(self, directory):
        manifest = json.loads((directory / "manifest.json").read_text())
        births = {}
        count = 0
        for entry in manifest["messages"]:
            where = f"{directory.name}/{entry['file']}"
            raw_bytes = read_payload(directory, entry)
            topic = sp.Topic.from_str(entry["topic"])
            self.eq(where, "topic round trip", entry["topic"], str(topic))
            kind = topic.message_type
            wire = pb.Payload.FromString(raw_bytes)
            if kind == sp.MessageType.NDEATH:
                death = sp.NDeath.decode(raw_bytes)
                metric = death.bd_seq_metric
                self.eq(where, "bdSeq name", "bdSeq", metric.name)
                self.eq(where, "bdSeq datatype", sp.DataType.INT64, metric.datatype)
                self.eq(where, "bdSeq", entry["bdSeq"], metric.value)
                self.eq(where, "metric count", 1, len(wire.metrics))
                self.eq(where, "seq present", False, wire.HasField("seq"))
                want_ts = entry["timestamp"]
                self.eq(where, "timestamp present", want_ts is not None, wire.HasField("timestamp"))
                if want_ts is not None:
                    self.eq(where, "timestamp", want_ts, wire.timestamp)
            else:
                key = (topic.group_id, topic.edge_node_id, topic.device_id)
                payload = kind.payload.decode(raw_bytes, birth=births.get(key))
                if kind in BIRTHS:
                    births[key] = payload
                self.eq(where, "timestamp", entry["timestamp"], payload.timestamp)
                self.eq(where, "seq", entry["seq"], payload.seq)
                self.eq(where, "metric count", len(entry["metrics"]), len(payload.metrics))
                for i, (want, got, raw) in enumerate(
                    zip(entry["metrics"], payload.metrics, wire.metrics)
                ):
                    self.check_metric(f"{where} metric {i}", want, got, raw, kind in DATA)
                if kind == sp.MessageType.NBIRTH:
                    bd = [m.value for m in payload.metrics if m.name == "bdSeq"]
                    self.eq(where, "bdSeq", [entry["bdSeq"]], bd)
            count += 1
            print(f"decoded {kind} {entry['topic']} ({entry['file']})")
        return count


def main(argv):
    if len(argv) < 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    checker = Checker()
    messages = sum(checker.check_directory(pathlib.Path(d)) for d in argv[1:])
    print(f"pysparkplug {sp.__version__}: {messages} messages, {checker.fields} fields checked")
    for problem in checker.problems:
        print(f"MISMATCH {problem}", file=sys.stderr)
    return 1 if checker.problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
