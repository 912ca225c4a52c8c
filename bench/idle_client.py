#!/usr/bin/env python3
"""Holds many idle keep-alive connections open to one server, for bench/run.sh idle.

Opens --conns connections (at most --parallel being set up at once), sends one GET on each
(HTTP/1.1, or HTTP/2 with prior knowledge for --proto h2c: one stream), reads the whole answer
and then leaves the connection idle. When every connection has its answer it prints
"READY ok=N failed=M" and waits for SIGUSR1; then it counts how many connections the server
closed meanwhile, prints "STILL_OPEN n", closes them all and exits.

Only the standard library: the h2c client writes the few frames it needs itself.
"""

import argparse
import asyncio
import signal
import struct
import sys

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, SETTINGS, PING, GOAWAY = 0x0, 0x1, 0x4, 0x6, 0x7
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4


def h2_frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def hpack_literal(name_index, value):
    """A literal field without indexing, name from the static table, value not Huffman-coded."""
    raw = value.encode()
    assert len(raw) < 127, "value too long for a one-byte length"
    return bytes([name_index, len(raw)]) + raw


def h2_request(host, path):
    block = b"\x82\x86"  # :method GET, :scheme http
    block += b"\x84" if path == "/" else hpack_literal(4, path)
    block += hpack_literal(1, host)  # :authority
    return (
        H2_PREFACE
        + h2_frame(SETTINGS, 0, 0)
        + h2_frame(HEADERS, END_STREAM | END_HEADERS, 1, block)
    )


async def read_frame(reader):
    head = await reader.readexactly(9)
    length = int.from_bytes(head[:3], "big")
    kind, flags = head[3], head[4]
    stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
    payload = await reader.readexactly(length)
    return kind, flags, stream, payload


async def h2_exchange(reader, writer, host, path):
    writer.write(h2_request(host, path))
    await writer.drain()
    status_seen = False
    while True:
        kind, flags, stream, payload = await read_frame(reader)
        if kind == SETTINGS and not flags & ACK:
            writer.write(h2_frame(SETTINGS, ACK, 0))
        elif kind == PING and not flags & ACK:
            writer.write(h2_frame(PING, ACK, 0, payload))
        elif kind == GOAWAY:
            raise ConnectionError("GOAWAY before the answer")
        elif stream == 1 and kind in (HEADERS, DATA):
            status_seen |= kind == HEADERS
            if flags & END_STREAM:
                if not status_seen:
                    raise ConnectionError("stream ended without headers")
                await writer.drain()
                return


async def h1_exchange(reader, writer, host, path):
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = head.split(b" ", 2)[1]
    if not status.startswith(b"2"):
        raise ConnectionError(f"status {status.decode()}")
    length = None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length is None:
        raise ConnectionError("answer without Content-Length")
    await reader.readexactly(length)


async def open_one(args, slots, conns, failures):
    async with slots:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(args.host, args.port), args.timeout
            )
        except (OSError, asyncio.TimeoutError) as e:
            failures.append(f"connect: {e!r}")
            return
        try:
            exchange = h2_exchange if args.proto == "h2c" else h1_exchange
            await asyncio.wait_for(exchange(reader, writer, args.host_header, args.path), args.timeout)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError, ValueError) as e:
            failures.append(f"exchange: {e!r}")
            writer.close()
            return
        conns.append((reader, writer))


async def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host-header", default="localhost")
    parser.add_argument("--path", default="/")
    parser.add_argument("--conns", type=int, default=10000)
    parser.add_argument("--parallel", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--proto", choices=["h1", "h2c"], default="h1")
    args = parser.parse_args()

    release = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, release.set)

    slots = asyncio.Semaphore(args.parallel)
    conns, failures = [], []
    await asyncio.gather(*(open_one(args, slots, conns, failures) for _ in range(args.conns)))
    for f in sorted(set(failures))[:5]:
        print(f"failure: {f}", file=sys.stderr)
    print(f"READY ok={len(conns)} failed={len(failures)}", flush=True)

    await release.wait()
    # A connection the server closed while idle has its end of stream waiting.
    await asyncio.sleep(0)
    still_open = sum(1 for reader, _ in conns if not reader.at_eof() and not reader._buffer)
    print(f"STILL_OPEN {still_open}", flush=True)
    for _, writer in conns:
        writer.close()
    await asyncio.gather(*(w.wait_closed() for _, w in conns), return_exceptions=True)
    print("CLOSED", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
