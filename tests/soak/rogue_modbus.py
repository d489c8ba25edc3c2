#!/usr/bin/env python3
"""A hostile Modbus TCP server for the fault soak: each connection gets the next misbehaviour.

    rogue_modbus.py PORT_FILE

Listens on a free 127.0.0.1 port, writes it to PORT_FILE, and serves until killed.
"""
import asyncio
import os
import struct
import sys

KINDS = ["close", "garbage", "huge_length", "wrong_ids", "silent", "exception", "drip"]


async def serve(reader, writer, kind):
    try:
        if kind == "close":
            return
        while True:
            head = await reader.readexactly(7)
            tid, _proto, length, unit = struct.unpack(">HHHB", head)
            body = await reader.readexactly(max(length - 1, 0))
            fc = body[0] if body else 3
            if kind == "garbage":
                writer.write(os.urandom(300))
            elif kind == "huge_length":
                writer.write(struct.pack(">HHHB", tid, 0, 0xFFFF, unit) + bytes([fc, 200]) + b"\x00" * 10)
            elif kind == "wrong_ids":
                writer.write(struct.pack(">HHHBBB", tid ^ 0x5A5A, 7, 5, unit ^ 0x33, fc, 2) + b"\x00\x01")
            elif kind == "silent":
                continue
            elif kind == "exception":
                writer.write(struct.pack(">HHHBBB", tid, 0, 3, unit, fc | 0x80, 4))
            elif kind == "drip":
                frame = struct.pack(">HHHBBB", tid, 0, 5, unit, fc, 2) + b"\x00\x01"
                for b in frame:
                    writer.write(bytes([b]))
                    await writer.drain()
                    await asyncio.sleep(1)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main():
    counter = {"n": 0}

    async def accept(reader, writer):
        kind = KINDS[counter["n"] % len(KINDS)]
        counter["n"] += 1
        await serve(reader, writer, kind)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write(f"{port}\n")
    os.replace(sys.argv[1] + ".tmp", sys.argv[1])
    async with server:
        await server.serve_forever()


asyncio.run(main())
