"""A user-space WAN link emulator for ``scripts/bench --wan`` (issue 23; this kernel has no
netem): TCP forwarders that put a one-way delay and bandwidth caps on every byte.

One ``Link`` runs an asyncio loop on its own thread and forwards any number of ``routes``
(listen on 127.0.0.1:free port, connect to a target) through the same emulated link:

- each direction of each connection waits ``rtt / 2`` before its bytes come out (a new
  connection's first bytes also wait one round trip: the TCP handshake the client did not pay
  on loopback);
- each direction of each connection is paced to ``per_conn`` bytes/s, and all connections of
  one direction together to ``total`` bytes/s (FIFO in the order bytes were read);
- at most ``window`` bytes of a direction are held in the emulator (read but not yet
  delivered), as a TCP window would; past it the emulator stops reading, so the sender sees
  back-pressure instead of an infinitely fast link.

Not modelled: slow start, losses, reordering.  The pacing maths (``Pacer``) has no I/O and is
tested in tests/unit/test_wanlink.py; ``Counters`` say what crossed the link (connections,
bytes per direction, the most bytes held at once).
"""
from __future__ import annotations

import asyncio
import collections
import socket
import threading
import time
from dataclasses import dataclass, field

MBIT = 1_000_000 / 8          # bytes/s in one Mbit/s
READ = 64 * 1024              # bytes read from a socket at a time


@dataclass(frozen=True)
class Profile:
    """An emulated link: round trip (s), bandwidth per connection and in total (bytes/s per
    direction, 0 = no cap) and the bytes one direction of a connection may hold."""

    name: str
    rtt: float
    per_conn: float
    total: float
    window: int = 4 << 20

    def describe(self) -> str:
        if not (self.rtt or self.per_conn or self.total):
            return "%s: no delay, no cap (the emulator's own cost)" % self.name
        return "%s: RTT %g ms, %g Mbit/s per connection, %g total" % (
            self.name, self.rtt * 1000, self.per_conn / MBIT, self.total / MBIT)


PROFILES = {
    "home": Profile("home", 0.040, 50 * MBIT, 100 * MBIT),
    "far": Profile("far", 0.150, 20 * MBIT, 100 * MBIT),
    "pass": Profile("pass", 0.0, 0.0, 0.0),
}


class Wire:
    """One direction of the whole link, shared by every connection: ``total`` bytes/s."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.free = 0.0

    def reserve(self, now: float, n: int) -> float:
        """``n`` bytes ready for the wire at ``now`` (call in time order): when they are
        through it."""
        if not self.rate:
            return now
        self.free = max(now, self.free) + n / self.rate
        return self.free


class Pacer:
    """One direction of one connection: bytes go out at the lower of the connection's own
    ``per_conn`` bytes/s and what the shared wire gives, then take the one-way delay.

    ``ready(now)``: when this connection can start sending bytes read at ``now`` (after the
    ones before them; ``start`` delays the first ones: the handshake).  The caller waits until
    then and only then calls ``send(ready, n)``, which takes the bytes' turn on the shared
    ``Wire`` (so the wire serves connections in the real order they send, and one
    connection's later bytes never hold a place ahead of another's) and returns their
    departure; ``arrival(departure)`` is when they come out at the far end.  Times are seconds
    on a monotonic clock; no I/O, no locking (one event loop uses it).
    """

    def __init__(self, profile: Profile, wire: Wire, start: float = 0.0) -> None:
        self.profile = profile
        self.wire = wire
        self.free = start

    def ready(self, now: float) -> float:
        return max(now, self.free)

    def send(self, ready: float, n: int) -> float:
        own = ready + (n / self.profile.per_conn if self.profile.per_conn else 0.0)
        self.free = max(own, self.wire.reserve(ready, n))
        return self.free

    def arrival(self, departure: float) -> float:
        return departure + self.profile.rtt / 2


@dataclass
class Counters:
    """What crossed the link since the last ``reset``."""

    connections: int = 0
    up_bytes: int = 0           # towards the server
    down_bytes: int = 0         # towards the client
    held_max: int = 0           # most bytes held in the emulator at once (both directions)
    held: int = 0
    per_route: dict = field(default_factory=lambda: collections.Counter())

    def snapshot(self) -> dict:
        return {"connections": self.connections, "up_mib": round(self.up_bytes / 2**20, 3),
                "down_mib": round(self.down_bytes / 2**20, 3),
                "held_max_mib": round(self.held_max / 2**20, 3),
                "connections_per_route": dict(self.per_route)}


class Link:
    """The emulator: ``add(name, host, port)`` starts a forwarder and returns its port."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.up = Wire(profile.total)
        self.down = Wire(profile.total)
        self.counters = Counters()
        self.loop = asyncio.new_event_loop()
        self._servers: list[asyncio.AbstractServer] = []
        self._targets: dict[str, tuple[str, int]] = {}
        self._live: set = set()     # the loop keeps only weak references to tasks
        self._thread = threading.Thread(target=self.loop.run_forever, name="wanlink",
                                        daemon=True)
        self._thread.start()

    def reset(self) -> None:
        self.counters = Counters()

    def profile_set(self, profile: Profile) -> None:
        """Switch the link's profile (connections made before keep their pacing)."""
        self.profile = profile
        self.up, self.down = Wire(profile.total), Wire(profile.total)

    def target(self, name: str, host: str, port: int) -> None:
        """Point route ``name`` at ``host:port`` (for connections made from now on)."""
        self._targets[name] = (host, port)

    def add(self, name: str, host: str, port: int) -> int:
        """Forward a new 127.0.0.1 port to ``host:port`` (see ``target``); returns the port."""
        self._targets[name] = (host, port)

        async def start() -> int:
            server = await asyncio.start_server(
                lambda r, w: self._serve(name, r, w), "127.0.0.1", 0)
            self._servers.append(server)
            return server.sockets[0].getsockname()[1]
        return asyncio.run_coroutine_threadsafe(start(), self.loop).result(30)

    def close(self) -> None:
        async def stop() -> None:
            for server in self._servers:
                server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)
        self.loop.close()

    async def _serve(self, name: str, client_r: asyncio.StreamReader,
                     client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._live.add(task)
        try:
            await self._forward(name, client_r, client_w)
        except asyncio.CancelledError:
            pass            # close(): the link goes away with its connections
        finally:
            self._live.discard(task)

    async def _forward(self, name: str, client_r: asyncio.StreamReader,
                       client_w: asyncio.StreamWriter) -> None:
        self.counters.connections += 1
        self.counters.per_route[name] += 1
        host, port = self._targets[name]
        try:
            server_r, server_w = await asyncio.open_connection(host, port)
        except OSError:
            client_w.close()
            return
        for writer in (client_w, server_w):
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        now, profile = time.monotonic(), self.profile
        up = Pacer(profile, self.up, now + profile.rtt)     # the handshake
        down = Pacer(profile, self.down, now)
        await asyncio.gather(self._pump(client_r, server_w, up, True),
                             self._pump(server_r, client_w, down, False),
                             return_exceptions=True)
        for writer in (client_w, server_w):
            writer.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    pacer: Pacer, upward: bool) -> None:
        """Read (at most ``window`` bytes held), pace (connection, then the shared wire), and
        deliver after the one-way delay: three stages so that the delay overlaps the pacing."""
        read_q: asyncio.Queue = asyncio.Queue()
        out_q: asyncio.Queue = asyncio.Queue()
        room = asyncio.Condition()
        held = [0]
        broken = [False]

        async def pace() -> None:
            while True:
                data = await read_q.get()
                if data is None:
                    break
                ready = pacer.ready(time.monotonic())
                await sleep_until(ready)
                out_q.put_nowait((pacer.arrival(pacer.send(ready, len(data))), data))
            out_q.put_nowait((0.0, None))

        async def deliver() -> None:
            try:
                while True:
                    when, data = await out_q.get()
                    if data is None:
                        break
                    await sleep_until(when)
                    writer.write(data)
                    await writer.drain()
                    async with room:
                        held[0] -= len(data)
                        self.counters.held -= len(data)
                        room.notify_all()
                if writer.can_write_eof():
                    writer.write_eof()
            except (ConnectionError, OSError):
                async with room:
                    broken[0] = True
                    self.counters.held -= held[0]
                    held[0] = 0
                    room.notify_all()
                writer.transport.abort()

        stages = [asyncio.ensure_future(pace()), asyncio.ensure_future(deliver())]
        try:
            while True:
                async with room:
                    await room.wait_for(lambda: held[0] < pacer.profile.window or broken[0])
                data = b"" if broken[0] else await reader.read(READ)
                if not data:
                    break
                held[0] += len(data)
                c = self.counters
                c.held += len(data)
                c.held_max = max(c.held_max, c.held)
                if upward:
                    c.up_bytes += len(data)
                else:
                    c.down_bytes += len(data)
                read_q.put_nowait(data)
        except (ConnectionError, OSError):
            pass
        finally:
            read_q.put_nowait(None)
            await asyncio.gather(*stages)


async def sleep_until(when: float) -> None:
    delay = when - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
