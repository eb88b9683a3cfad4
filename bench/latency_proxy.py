"""A loopback TCP proxy that delays every byte it forwards by a fixed time, each way.

    python bench/latency_proxy.py --target 127.0.0.1:8080 --delay-ms 2 [--port 0]

Prints the port it listens on (one line on stdout), then forwards every connection to the
target.  Each chunk read from one side is written to the other ``delay`` later, in order, so a
request/response exchange takes at least 2 x delay more than on the bare loopback (what a
network round trip costs: production's clients reach the RGW across the data-centre network,
~0.2-1 ms, and a legacy VM in another row or site more).  Bandwidth is not limited.  Runs in its
own process, so the bench can count its CPU apart from the client's.
"""

from __future__ import annotations

import argparse
import asyncio
import sys


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    async def send() -> None:
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    sender = asyncio.ensure_future(send())
    try:
        while True:
            data = await reader.read(1 << 16)
            queue.put_nowait((loop.time() + delay, data))
            if not data:
                break
        await sender
    except (ConnectionError, OSError):
        sender.cancel()


async def handle(client_r, client_w, target_host: str, target_port: int, delay: float) -> None:
    try:
        server_r, server_w = await asyncio.open_connection(target_host, target_port)
    except OSError:
        client_w.close()
        return
    await asyncio.gather(pipe(client_r, server_w, delay), pipe(server_r, client_w, delay), return_exceptions=True)
    for w in (client_w, server_w):
        w.close()


async def main_async(args: argparse.Namespace) -> None:
    host, port = args.target.rsplit(":", 1)
    delay = args.delay_ms / 1000.0
    server = await asyncio.start_server(lambda r, w: handle(r, w, host, int(port), delay), "127.0.0.1", args.port)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", required=True, help="host:port to forward to")
    parser.add_argument("--delay-ms", type=float, default=2.0, help="added to every chunk, each way")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    try:
        asyncio.run(main_async(args))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
