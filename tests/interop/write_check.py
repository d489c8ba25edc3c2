#!/usr/bin/env python3
"""Checks what plantwatch wrote to the pymodbus peer, independently of plantwatch's encoder.

    write_check.py PORT < expectations.json

Each expectation is {"function": "holding"|"coil", "address": N, "type": T, "order": O,
"value": V, "length": N?, "bit": N?, "scale": S?}. The expected registers are computed here with
Python's `struct` and regmap's byte/word-order definition (regmap.arrange), then the peer is read
over raw Modbus TCP (function 03 or 01, unit regmap.UNIT_ID) without any Modbus library, so
neither plantwatch's codec nor a client library's decides what is right. A `bit` expectation
names the register's other bits as they were in regmap, which a write must leave alone.

Prints one line per point; exits 1 on any mismatch.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import regmap  # noqa: E402


def transact(sock: socket.socket, tid: int, pdu: bytes) -> bytes:
    sock.sendall(struct.pack(">HHHB", tid, 0, len(pdu) + 1, regmap.UNIT_ID) + pdu)
    head = b""
    while len(head) < 7:
        chunk = sock.recv(7 - len(head))
        if not chunk:
            raise EOFError("peer closed")
        head += chunk
    _, _, length, _ = struct.unpack(">HHHB", head)
    body = b""
    while len(body) < length - 1:
        chunk = sock.recv(length - 1 - len(body))
        if not chunk:
            raise EOFError("peer closed")
        body += chunk
    return body


def expected_words(e: dict) -> list[int]:
    ty, order, value = e["type"], e.get("order") or "ABCD", e["value"]
    if ty == "bit":
        word = regmap.tables()["holding"][e["address"]]
        swap = order in ("BADC", "DCBA")
        if swap:
            word = int.from_bytes(word.to_bytes(2, "big")[::-1], "big")
        word = word | (1 << e["bit"]) if value else word & ~(1 << e["bit"])
        if swap:
            word = int.from_bytes(word.to_bytes(2, "big")[::-1], "big")
        return [word]
    if ty == "string":
        raw = value.encode("ascii").ljust(2 * e["length"], b"\0")
        return regmap.arrange(raw, order)
    scale = e.get("scale") or 1.0
    raw = value / scale
    if ty in ("f32", "f64"):
        return regmap.arrange(struct.pack(regmap.STRUCT[ty], raw), order)
    if ty == "bcd16":
        return regmap.arrange(bytes.fromhex(f"{round(raw):04d}"), order)
    if ty == "bcd32":
        return regmap.arrange(bytes.fromhex(f"{round(raw):08d}"), order)
    return regmap.arrange(struct.pack(regmap.STRUCT[ty], round(raw)), order)


def main() -> int:
    port = int(sys.argv[1])
    expectations = json.load(sys.stdin)
    bad = 0
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for tid, e in enumerate(expectations, start=1):
            if e["function"] == "coil":
                answer = transact(sock, tid, struct.pack(">BHH", 1, e["address"], 1))
                got, want = bool(answer[2] & 1), bool(e["value"])
            else:
                want = expected_words(e)
                answer = transact(sock, tid, struct.pack(">BHH", 3, e["address"], len(want)))
                got = list(struct.unpack(f">{len(want)}H", answer[2:]))
            ok = got == want
            bad += not ok
            print(f"{'ok ' if ok else 'BAD'} {e['name']}: peer holds {got}, expected {want}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
