#!/usr/bin/env python3
"""Assertions for tests/interop/run.sh.

    check.py peer HOST PORT TALLY          raw Modbus TCP reads: does the peer serve regmap?
    check.py read DEVICE JSON RC TALLY     does `plantwatch read DEVICE --json` match regmap?

Each check appends "pass NAME" or "fail NAME: why" to TALLY and prints failures. The peer check
uses its own few lines of Modbus TCP (no pymodbus client), so a failure there is the peer's
or the map's, not plantwatch's.
"""

from __future__ import annotations

import json
import math
import os
import socket
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import regmap  # noqa: E402


class Tally:
    def __init__(self, path: str) -> None:
        self.path = path
        self.passed = 0
        self.failed = 0

    def check(self, ok: bool, name: str, why: str = "") -> bool:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(f"pass {name}\n" if ok else f"fail {name}: {why}\n")
        if ok:
            self.passed += 1
        else:
            self.failed += 1
            print(f"  FAIL {name}: {why}", flush=True)
        return ok


# ---------------------------------------------------------------- peer self-check (raw TCP)

def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("peer closed the connection")
        buf += chunk
    return buf


def raw_read(sock: socket.socket, tid: int, fc: int, address: int, count: int):
    """One Modbus TCP read. Returns a list (registers or bools) or ("exception", code)."""
    pdu = struct.pack(">BHH", fc, address, count)
    sock.sendall(struct.pack(">HHHB", tid, 0, len(pdu) + 1, regmap.UNIT_ID) + pdu)
    r_tid, _pid, length, _unit = struct.unpack(">HHHB", _recv_exact(sock, 7))
    body = _recv_exact(sock, length - 1)
    if r_tid != tid:
        raise ValueError(f"transaction id {r_tid} != {tid}")
    if body[0] == fc | 0x80:
        return ("exception", body[1])
    if body[0] != fc:
        raise ValueError(f"function {body[0]} != {fc}")
    data = body[2 : 2 + body[1]]
    if fc in (1, 2):
        return [bool((data[i // 8] >> (i % 8)) & 1) for i in range(count)]
    return list(struct.unpack(f">{count}H", data))


def peer(host: str, port: int, tally: Tally) -> None:
    t = regmap.tables()
    fcs = {"coil": 1, "discrete_input": 2, "holding": 3, "input": 4}
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.settimeout(5)
        tid = 0
        main_end = {tb: max(a for a in t[tb] if a < regmap.GAP_BASE) for tb in regmap.TABLES}
        for table, fc in fcs.items():
            cells = t[table]
            if table in regmap.TABLES:
                ranges = [(a, min(100, main_end[table] + 1 - a))
                          for a in range(0, main_end[table] + 1, 100)]
            else:
                ranges = [(0, max(cells) + 1)]
            for start, count in ranges:
                tid += 1
                got = raw_read(sock, tid, fc, start, count)
                want = [cells[a] for a in range(start, start + count)]
                tally.check(got == want, f"peer {table} {start}+{count}",
                            f"served {got!r}, regmap says {want!r}")
        for p in regmap.GAP_POINTS:
            tid += 1
            count = 1 if p.function in ("coil", "discrete_input") else len(p.registers) or 1
            got = raw_read(sock, tid, fcs[p.function], p.address, count)
            if p.mapped:
                want = [p.expected] if count == 1 and not p.registers else p.registers
                tally.check(got == want, f"peer {p.name}", f"served {got!r}, want {want!r}")
            else:
                tally.check(got == ("exception", 2), f"peer {p.name} is unmapped",
                            f"served {got!r}, want exception 02")


# ---------------------------------------------------------------- plantwatch read --json

def _hex(regs: list[int]) -> str:
    return " ".join(f"{r:04X}" for r in regs)


def _value_ok(want: object, got: object) -> bool:
    if isinstance(want, bool):
        return isinstance(got, bool) and got == want
    if isinstance(want, int):
        return isinstance(got, int) and not isinstance(got, bool) and got == want
    if isinstance(want, float):
        return (isinstance(got, (int, float)) and not isinstance(got, bool)
                and math.isclose(got, want, rel_tol=1e-3, abs_tol=1e-9))
    return got == want


def read(device: str, json_path: str, rc: int, tally: Tally) -> None:
    expected = regmap.expected(device)
    with open(json_path, encoding="utf-8") as f:
        text = f.read()
    try:
        out = json.loads(text)
    except json.JSONDecodeError as e:
        tally.check(False, f"{device} json", f"not one JSON object ({e}): {text[:300]!r}")
        for name in expected:
            tally.check(False, f"{device}.{name}", "no output")
        return
    tally.check(rc == 0 and out.get("answered") is True and out.get("device") == device,
                f"{device} answered",
                f"exit {rc}, device={out.get('device')!r} answered={out.get('answered')!r} "
                f"error={out.get('error')!r}")
    points = out.get("points") or {}
    extra = sorted(set(points) - set(expected))
    tally.check(not extra, f"{device} no unexpected points", f"extra points {extra}")
    for name, p in expected.items():
        s = points.get(name)
        key = f"{device}.{name}"
        where = (f"[fc {p.function} @{p.address} {p.type}"
                 f"{' ' + p.order if p.order else ''}"
                 f"{' bit ' + str(p.bit) if p.bit is not None else ''}"
                 f"{' scale ' + str(p.scale) if p.scale is not None else ''}"
                 f"{' offset ' + str(p.offset) if p.offset is not None else ''}"
                 f"{' regs ' + _hex(p.registers) if p.registers else ''}]")
        if s is None:
            tally.check(False, key, f"missing from output {where}")
            continue
        if p.expected is None:
            tally.check(s.get("v") is None and s.get("q") == "bad"
                        and s.get("reason") == p.reason, key,
                        f"want bad/{p.reason} with no value, got {s} {where}")
            continue
        problems = []
        if s.get("q") != "good" or s.get("reason") is not None:
            problems.append(f"quality {s.get('q')}/{s.get('reason')}, want good")
        if not _value_ok(p.expected, s.get("v")):
            problems.append(f"value {s.get('v')!r}, want {p.expected!r}")
        if p.unit is not None and s.get("unit") != p.unit:
            problems.append(f"unit {s.get('unit')!r}, want {p.unit!r}")
        tally.check(not problems, key, "; ".join(problems) + f" {where}")


def main(argv: list[str]) -> int:
    if len(argv) == 5 and argv[1] == "peer":
        tally = Tally(argv[4])
        try:
            peer(argv[2], int(argv[3]), tally)
        except (OSError, ValueError) as e:
            tally.check(False, "peer self-check", repr(e))
    elif len(argv) == 6 and argv[1] == "read":
        tally = Tally(argv[5])
        read(argv[2], argv[3], int(argv[4]), tally)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 1 if tally.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
