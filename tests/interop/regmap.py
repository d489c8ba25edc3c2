"""The interop register map: what the pymodbus peer serves and what plantwatch must read back.

Everything here is written from the byte/word-order definitions in the brief, with Python's
`struct`, independently of plantwatch's Rust decoder:

* a value is first packed big-endian (`struct.pack(">...")`), giving bytes A B C D [E F G H];
* ABCD keeps them; CDAB reverses the order of the 16-bit words (all 4 words for 64-bit values,
  all N words for strings); BADC swaps the two bytes inside every word; DCBA does both, which
  is plain little-endian.

One table of `Point`s drives three things, so they cannot drift apart:
the server's registers and bits (`tables()`), the plantwatch config (`config_toml()`, checked
into `pymodbus.toml`) and the expected JSON values (`expected()`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")
TABLES = ("holding", "input")

# Registers between mapped blocks are filled with this (never a value a point expects), so
# an off-by-one read shows up as a wrong value rather than as another point's value.
FILLER = 0x7A5C

# The unit id every peer answers.
UNIT_ID = 1

# The negative device reads these; the peer maps registers around them but not them.
GAP_BASE = 1000


@dataclass
class Point:
    """One plantwatch point and what it must read."""

    name: str
    function: str  # coil, discrete_input, holding, input
    address: int
    type: str
    expected: object  # int, float, bool, str, or None for "must be bad"
    registers: list[int] = field(default_factory=list)  # empty for bits
    order: str | None = None
    scale: float | None = None
    offset: float | None = None
    bit: int | None = None
    length: int | None = None
    unit: str | None = None
    register: int | None = None  # Modicon number instead of function + address
    reason: str | None = None  # expected bad reason, for negative points
    mapped: bool = True  # False: the peer must NOT serve these addresses


def arrange(be: bytes, order: str) -> list[int]:
    """Big-endian bytes -> registers in `order` (see module docs)."""
    if len(be) % 2:
        raise ValueError("odd byte count")
    words = [be[i : i + 2] for i in range(0, len(be), 2)]
    if order in ("CDAB", "DCBA"):
        words = words[::-1]
    if order in ("BADC", "DCBA"):
        words = [w[::-1] for w in words]
    return [int.from_bytes(w, "big") for w in words]


STRUCT = {
    "u16": ">H",
    "i16": ">h",
    "u32": ">I",
    "i32": ">i",
    "u64": ">Q",
    "i64": ">q",
    "f32": ">f",
    "f64": ">d",
}


def raw_bytes(ty: str, raw: object, length: int | None = None) -> bytes:
    """The big-endian (ABCD) bytes of a raw, unscaled value of type `ty`."""
    if ty in STRUCT:
        return struct.pack(STRUCT[ty], raw)
    if ty == "bcd16":
        return struct.pack(">H", int(f"{raw:04d}", 16))
    if ty == "bcd32":
        return struct.pack(">I", int(f"{raw:08d}", 16))
    if ty == "string":
        assert length is not None
        b = str(raw).encode("ascii")
        if len(b) > 2 * length:
            raise ValueError("string too long")
        return b.ljust(2 * length, b"\0")
    if ty == "bit":
        return struct.pack(">H", raw)
    raise ValueError(ty)


def f32_round(v: float) -> float:
    return struct.unpack(">f", struct.pack(">f", v))[0]


class _Builder:
    def __init__(self) -> None:
        self.points: list[Point] = []
        self.cursor = {"holding": 0, "input": 0}

    def reg(self, table: str, name: str, ty: str, raw: object, order: str, *,
            length: int | None = None, scale: float | None = None,
            offset: float | None = None, unit: str | None = None) -> Point:
        regs = arrange(raw_bytes(ty, raw, length), order)
        address = self.cursor[table]
        self.cursor[table] += len(regs) + 1  # one filler register after each point
        if ty == "f32":
            value: object = f32_round(float(raw))
        elif ty == "u64" and raw > 2**63 - 1:
            value = float(raw)  # beyond i64 plantwatch reports an f64
        else:
            value = raw
        if scale is not None or offset is not None:
            value = float(value) * (1.0 if scale is None else scale) + (offset or 0.0)
        p = Point(name, table, address, ty, value, regs, order=order, length=length,
                  scale=scale, offset=offset, unit=unit)
        self.points.append(p)
        return p


def _build() -> list[Point]:
    b = _Builder()
    for t, table in enumerate(TABLES):
        pre = "h" if table == "holding" else "i"
        for k, order in enumerate(ORDERS):
            o = order.lower()
            b.reg(table, f"{pre}_{o}_u16", "u16", 51234 + 111 * k + 7 * t, order)
            b.reg(table, f"{pre}_{o}_i16", "i16", -12345 - 11 * k - 3 * t, order)
            b.reg(table, f"{pre}_{o}_u32", "u32", 3_000_000_000 + 1_234_567 * k + t, order)
            b.reg(table, f"{pre}_{o}_i32", "i32", -1_987_654_321 + 1013 * k + t, order)
            b.reg(table, f"{pre}_{o}_u64", "u64", 0x0123456789ABCDEF + 0x1111 * k + t, order)
            b.reg(table, f"{pre}_{o}_i64", "i64", -0x0123456789ABCDEF - 1000 * k - t, order)
            b.reg(table, f"{pre}_{o}_f32", "f32", (123.456 * (k + 1)) * (-1) ** k + t, order)
            b.reg(table, f"{pre}_{o}_f64", "f64",
                  2.718281828459045 * 10**k * (-1) ** (k + t), order)
            b.reg(table, f"{pre}_{o}_string", "string", f"PW-{order}-{t}", order, length=6)
            b.reg(table, f"{pre}_{o}_bcd16", "bcd16", [1234, 5678, 9012, 3450][k] + t, order)
            b.reg(table, f"{pre}_{o}_bcd32", "bcd32",
                  [12345678, 87654321, 10293847, 99990000][k] + t, order)
            # One register, several bit points on it. 0x8125 and its byte swap 0x2581 differ
            # in bits 0..15 such that a wrong swap is caught (bits 13 and 15).
            word = 0x8125 ^ (t << 1)
            regs = arrange(struct.pack(">H", word), order)
            address = b.cursor[table]
            b.cursor[table] += 2
            for bit in (0, 1, 5, 8, 13, 15):
                b.points.append(Point(f"{pre}_{o}_bit{bit:02d}", table, address, "bit",
                                      bool((word >> bit) & 1), regs, order=order, bit=bit))
        # Extremes and full-length strings.
        b.reg(table, f"{pre}_u64_big", "u64", 0xFEDCBA9876543210 - t, "ABCD")
        b.reg(table, f"{pre}_i64_min", "i64", -(2**63) + t, "CDAB")
        b.reg(table, f"{pre}_u32_max", "u32", 2**32 - 1 - t, "DCBA")
        b.reg(table, f"{pre}_i16_min", "i16", -32768 + t, "BADC")
        b.reg(table, f"{pre}_string_full", "string", f"FULLSTRING1{t}", "ABCD", length=6)
        b.reg(table, f"{pre}_string_badc", "string", f"Swapped-{t}", "BADC", length=5)
        # Scaled values.
        b.reg(table, f"{pre}_scaled_u16", "u16", 2345 + t, "ABCD", scale=0.1, offset=-10.0,
              unit="V")
        b.reg(table, f"{pre}_scaled_i16", "i16", -250 - t, "ABCD", scale=0.01, unit="A")
        b.reg(table, f"{pre}_scaled_u32", "u32", 1234567 + t, "CDAB", scale=0.001,
              unit="kWh")
        b.reg(table, f"{pre}_scaled_i32", "i32", -40000 - t, "DCBA", scale=0.5, offset=100.0)
        b.reg(table, f"{pre}_scaled_f32", "f32", 21.5 + t, "BADC", scale=2.0, offset=-3.0,
              unit="degC")
        b.reg(table, f"{pre}_scaled_f64", "f64", 1.0e6 + t, "CDAB", scale=1e-3, unit="MW")
        b.reg(table, f"{pre}_scaled_bcd16", "bcd16", 450 + t, "ABCD", scale=0.1)
        b.reg(table, f"{pre}_scaled_bcd32", "bcd32", 1234 + t, "DCBA", scale=0.01,
              offset=0.5)

    # Modicon register numbers for a few of the points above (same registers, second point).
    by_name = {p.name: p for p in b.points}
    for src, base in (("h_abcd_u16", 40001), ("h_cdab_f32", 40001), ("i_dcba_i32", 30001),
                      ("i_badc_u64", 300001), ("h_abcd_string", 400001)):
        s = by_name[src]
        b.points.append(Point(f"modicon_{src}", s.function, s.address, s.type, s.expected,
                              s.registers, order=s.order, length=s.length,
                              register=base + s.address))

    # Bits: 16 coils and 16 discrete inputs from 0, and one far bit each (bridged gap).
    coils = [True, False, True, True, False, False, True, False,
             True, True, True, False, False, False, False, True]
    dis = [not c if i % 3 else c for i, c in enumerate(coils)]
    for i, v in enumerate(coils):
        b.points.append(Point(f"coil_{i:02d}", "coil", i, "bool", v))
    b.points.append(Point("coil_40", "coil", 40, "bool", True))
    for i, v in enumerate(dis):
        b.points.append(Point(f"di_{i:02d}", "discrete_input", i, "bool", v))
    b.points.append(Point("di_70", "discrete_input", 70, "bool", True))
    b.points.append(Point("modicon_coil_00003", "coil", 2, "bool", coils[2], register=3))
    b.points.append(Point("modicon_di_10002", "discrete_input", 1, "bool", dis[1],
                          register=10002))
    return b.points


def _gap_points() -> list[Point]:
    """The negative device: readable points around addresses the peer does not have."""
    g = GAP_BASE
    pts = [
        Point("gap_ok_a", "holding", g, "u16", 4242, arrange(struct.pack(">H", 4242), "ABCD")),
        Point("gap_ok_b", "holding", g + 1, "i32", -77777,
              arrange(struct.pack(">i", -77777), "ABCD")),
        # g+3 .. g+9 are a hole in the peer's map.
        Point("gap_missing", "holding", g + 5, "u16", None, mapped=False,
              reason="exception:02"),
        Point("gap_ok_c", "holding", g + 10, "f32", f32_round(-0.125),
              arrange(struct.pack(">f", -0.125), "CDAB"), order="CDAB"),
        Point("gap_past_end", "holding", g + 500, "u16", None, mapped=False,
              reason="exception:02"),
        Point("gap_input_missing", "input", g + 200, "u32", None, mapped=False,
              reason="exception:02"),
        Point("gap_input_ok", "input", g, "u16", 999, arrange(struct.pack(">H", 999), "ABCD")),
        Point("gap_coil_missing", "coil", 600, "bool", None, mapped=False,
              reason="exception:02"),
        Point("gap_coil_ok", "coil", 0, "bool", True),
    ]
    return pts


POINTS = _build()
GAP_POINTS = _gap_points()


def tables() -> dict[str, dict[int, object]]:
    """address -> register (int) or bit (bool), per table, for the peer to serve."""
    out: dict[str, dict[int, object]] = {
        "coil": {}, "discrete_input": {}, "holding": {}, "input": {}}
    for table in TABLES:
        end = max(p.address + len(p.registers) for p in POINTS if p.function == table)
        for a in range(end + 1):
            out[table][a] = FILLER
    for p in POINTS + GAP_POINTS:
        if not p.mapped:
            continue
        if p.function in ("coil", "discrete_input"):
            out[p.function][p.address] = p.expected
        else:
            for i, r in enumerate(p.registers):
                out[p.function][p.address + i] = r
    # Bits between the mapped ones read as False (pymodbus pads bit blocks anyway).
    for bits in ("coil", "discrete_input"):
        top = max(out[bits])
        for a in range(top + 1):
            out[bits].setdefault(a, False)
    # The negative points must really be missing (g+3 .. g+9 is a hole, the rest is far away).
    for p in GAP_POINTS:
        assert p.mapped or p.address not in out[p.function], p.name
    return out


DEVICES = {
    # name: (link, points)
    "tcp-all": ("pym-tcp", POINTS),
    "rtu-all": ("pym-rtu", POINTS),
    "rtutcp-all": ("pym-rtu-tcp", POINTS),
    "tcp-gaps": ("pym-tcp", GAP_POINTS),
    "rtu-gaps": ("pym-rtu", GAP_POINTS),
}

# Placeholders in the checked-in config; run.sh rewrites them to a free port and the pty.
TCP_PORT_PLACEHOLDER = 15020
RTU_TCP_PORT_PLACEHOLDER = 15021
TTY_PLACEHOLDER = "/tmp/plantwatch-interop/ttyB"


def _toml_value(v: object) -> str:
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, float):
        return repr(v)
    return str(v)


def config_toml() -> str:
    lines = [
        "# GENERATED by `python3 tests/interop/regmap.py > tests/interop/pymodbus.toml`;",
        "# tests/interop/run.sh fails if this file and regmap.py disagree.",
        "# Polls the register map that tests/interop/pymodbus_server.py serves. run.sh rewrites",
        f"# port {TCP_PORT_PLACEHOLDER}, port {RTU_TCP_PORT_PLACEHOLDER} and "
        f"{TTY_PLACEHOLDER} to a free port and a socat pty.",
        "",
        "[gateway]",
        'site = "interop"',
        'id = "gw-interop"',
        "",
        "[[links]]",
        'name = "pym-tcp"',
        'kind = "tcp"',
        'host = "127.0.0.1"',
        f"port = {TCP_PORT_PLACEHOLDER}",
        "connect_timeout_ms = 2000",
        "",
        "[[links]]",
        'name = "pym-rtu-tcp"',
        'kind = "rtu_over_tcp"',
        'host = "127.0.0.1"',
        f"port = {RTU_TCP_PORT_PLACEHOLDER}",
        "connect_timeout_ms = 2000",
        "",
        "[[links]]",
        'name = "pym-rtu"',
        'kind = "rtu"',
        f'path = "{TTY_PLACEHOLDER}"',
        "baud = 19200",
        'parity = "none"',
        "",
    ]
    for dev, (link, points) in DEVICES.items():
        lines += [
            "[[devices]]",
            f'name = "{dev}"',
            f'link = "{link}"',
            f"unit_id = {UNIT_ID}",
            "timeout_ms = 1000",
            "",
        ]
        for p in points:
            lines.append(f"[devices.points.{p.name}]")
            if p.register is not None:
                lines.append(f"register = {p.register}")
            else:
                lines.append(f'function = "{p.function}"')
                lines.append(f"address = {p.address}")
            lines.append(f'type = "{p.type}"')
            for key in ("order", "scale", "offset", "bit", "length", "unit"):
                v = getattr(p, key)
                if v is not None:
                    lines.append(f"{key} = {_toml_value(v)}")
            lines.append("")
    return "\n".join(lines)


def expected(device: str) -> dict[str, Point]:
    return {p.name: p for p in DEVICES[device][1]}


if __name__ == "__main__":
    print(config_toml(), end="")
