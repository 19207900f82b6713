"""A TCP fault proxy: forwards a port to its upstream, and on command black-holes or cuts every connection.

`blackhole` stops every byte both ways without closing anything, as a dropped route does: senders fill their
buffers and block, keepalives and heartbeats go unanswered, new connections are accepted but lead nowhere.
`forward` heals it (held bytes flow on, connections their ends gave up on close). `cut` resets every
connection and each new one until `forward`.

python -m tests.faults.proxy --listen 18624 --upstream 127.0.0.1:5699 --control 18625
then `echo blackhole | nc 127.0.0.1 18625` (commands: forward, blackhole, cut, status).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import socket
from dataclasses import dataclass, field


class Mode(enum.StrEnum):
    forward = "forward"
    blackhole = "blackhole"
    cut = "cut"


@dataclass(eq=False)
class Link:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.transport.abort()


@dataclass
class FaultProxy:
    upstream_host: str
    upstream_port: int
    mode: Mode = Mode.forward
    links: set[Link] = field(default_factory=set)
    flowing: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.flowing.set()

    def set_mode(self, mode: Mode) -> None:
        self.mode = mode
        if mode is Mode.blackhole:
            self.flowing.clear()
            return
        self.flowing.set()
        if mode is Mode.cut:
            for link in list(self.links):
                link.abort()

    async def accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode is Mode.cut:
            writer.transport.abort()
            return
        link = Link(writer)
        self.links.add(link)
        try:
            # Black-holed: the connection is accepted but goes nowhere until healed, like an unanswered SYN.
            await self.flowing.wait()
            try:
                upstream_reader, link.upstream = await asyncio.open_connection(self.upstream_host, self.upstream_port)
            except OSError:
                writer.transport.abort()
                return
            await asyncio.gather(self._pump(reader, link.upstream), self._pump(upstream_reader, writer))
        finally:
            self.links.discard(link)
            link.abort()

    async def _pump(self, source: asyncio.StreamReader, target: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while True:
                await self.flowing.wait()
                data = await source.read(65536)
                if not data:
                    break
                # Read just before the link went dark: held, never dropped (TCP would retransmit it).
                await self.flowing.wait()
                target.write(data)
                await target.drain()
        with contextlib.suppress(OSError):
            target.write_eof()

    async def control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        command = (await reader.readline()).decode().strip()
        if command in Mode.__members__:
            self.set_mode(Mode(command))
        writer.write(f"{self.mode.value} {len(self.links)}\n".encode())
        await writer.drain()
        writer.close()


def command(control_port: int, mode: Mode | None = None) -> str:
    """Sets the proxy's mode (or only reads it); answers `<mode> <open connections>`."""
    with socket.create_connection(("127.0.0.1", control_port), timeout=5) as connection:
        connection.sendall(f"{mode.value if mode else 'status'}\n".encode())
        return connection.makefile().readline().strip()


async def serve(listen: int, upstream: str, control: int) -> None:
    host, port = upstream.rsplit(":", 1)
    proxy = FaultProxy(host, int(port))
    forwarding = await asyncio.start_server(proxy.accept, "127.0.0.1", listen)
    controlling = await asyncio.start_server(proxy.control, "127.0.0.1", control)
    print(f"proxy 127.0.0.1:{listen} -> {upstream}, control on 127.0.0.1:{control}", flush=True)
    async with forwarding, controlling:
        await asyncio.gather(forwarding.serve_forever(), controlling.serve_forever())


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.faults.proxy")
    parser.add_argument("--listen", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="host:port")
    parser.add_argument("--control", type=int, required=True)
    arguments = parser.parse_args()
    asyncio.run(serve(arguments.listen, arguments.upstream, arguments.control))


if __name__ == "__main__":
    main()
