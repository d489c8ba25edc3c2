#!/usr/bin/env python3
"""A pymodbus peer serving the interop register map (tests/interop/regmap.py).

    pymodbus_server.py [--tcp PORT] [--rtu-over-tcp PORT] [--serial PATH] [--baud N]

Serves unit id 1 on 127.0.0.1:PORT (Modbus TCP), on 127.0.0.1:PORT with RTU framing, and on a
serial device (one end of a socat pty pair) with RTU framing, all from one datastore. Prints
`READY` on stdout once every listener is up. Addresses that regmap leaves unmapped answer
exception 02 (illegal data address).

The datastore API of pymodbus changed across 3.x releases: 3.11+ has SimData/SimDevice (used
here when present); older releases have ModbusSparseDataBlock with a slave/device context
(checked with 3.8.6, which however answers an unmapped coil with the malformed function code
0x80 instead of 0x81, so the negative coil check fails there).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import regmap  # noqa: E402


def _runs(cells: dict[int, object]) -> list[tuple[int, list[object]]]:
    """Contiguous runs of mapped addresses: [(start, values)]."""
    out: list[tuple[int, list[object]]] = []
    for a in sorted(cells):
        if out and out[-1][0] + len(out[-1][1]) == a:
            out[-1][1].append(cells[a])
        else:
            out.append((a, [cells[a]]))
    return out


def _context_simdevice(t):
    from pymodbus.simulator import DataType, SimData, SimDevice

    def regs(cells):
        return [SimData(a, values=[int(v) for v in vals], datatype=DataType.REGISTERS)
                for a, vals in _runs(cells)]

    def bits(cells):
        return [SimData(a, values=[bool(v) for v in vals], datatype=DataType.BITS)
                for a, vals in _runs(cells)]

    # Non-shared blocks: (coils, discrete inputs, holding, input); bits are addressed per bit.
    return SimDevice(
        id=regmap.UNIT_ID,
        simdata=(bits(t["coil"]), bits(t["discrete_input"]),
                 regs(t["holding"]), regs(t["input"])),
    )


def _context_legacy(t):
    from pymodbus.datastore import ModbusServerContext, ModbusSparseDataBlock

    try:  # 3.10
        from pymodbus.datastore import ModbusDeviceContext as Ctx
    except ImportError:  # before 3.10
        from pymodbus.datastore import ModbusSlaveContext as Ctx
    # Up to 3.6 `zero_mode=True` addresses blocks from 0; later releases always add 1.
    if "zero_mode" in inspect.signature(Ctx.__init__).parameters:
        kw, shift = {"zero_mode": True}, 0
    else:
        kw, shift = {}, 1

    def block(cells):
        return ModbusSparseDataBlock({a + shift: v for a, v in cells.items()})

    dev = Ctx(co=block(t["coil"]), di=block(t["discrete_input"]),
              hr=block(t["holding"]), ir=block(t["input"]), **kw)
    try:
        return ModbusServerContext(devices={regmap.UNIT_ID: dev}, single=False)
    except TypeError:
        return ModbusServerContext(slaves={regmap.UNIT_ID: dev}, single=False)


def build_context():
    t = regmap.tables()
    try:
        import pymodbus.simulator as sim

        if hasattr(sim, "SimDevice") and hasattr(sim, "SimData"):
            return _context_simdevice(t)
    except ImportError:
        pass
    return _context_legacy(t)


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tcp", type=int, help="Modbus TCP port on 127.0.0.1")
    ap.add_argument("--rtu-over-tcp", type=int, help="RTU-framed TCP port on 127.0.0.1")
    ap.add_argument("--serial", help="serial device for Modbus RTU (a pty end)")
    ap.add_argument("--baud", type=int, default=19200)
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.ERROR)
    logging.getLogger("pymodbus").setLevel(logging.DEBUG if args.verbose else logging.ERROR)

    import pymodbus
    from pymodbus.framer import FramerType
    from pymodbus.server import ModbusSerialServer, ModbusTcpServer

    context = build_context()
    servers = []
    if args.tcp:
        servers.append(ModbusTcpServer(context, address=("127.0.0.1", args.tcp)))
    if args.rtu_over_tcp:
        servers.append(ModbusTcpServer(context, framer=FramerType.RTU,
                                       address=("127.0.0.1", args.rtu_over_tcp)))
    if args.serial:
        servers.append(ModbusSerialServer(context, framer=FramerType.RTU, port=args.serial,
                                          baudrate=args.baud, parity="N", stopbits=1,
                                          bytesize=8))
    if not servers:
        ap.error("give at least one of --tcp, --rtu-over-tcp, --serial")
    tasks = []
    for s in servers:
        try:
            await s.serve_forever(background=True)
        except TypeError:  # older pymodbus: no background mode
            tasks.append(asyncio.create_task(s.serve_forever()))
            await asyncio.sleep(0.2)
    print(f"READY pymodbus {pymodbus.__version__}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        for s in servers:
            await s.shutdown()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except KeyboardInterrupt:
        sys.exit(0)
