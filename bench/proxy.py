"""Proxy: a threaded TCP relay that adds latency, counts bytes and can cut the link.

Used by the drain and wire benchmarks (a 100 ms round trip like a cellular link) and by the
delivery tests (a dead zone: ``cut()`` drops every connection and refuses new ones until
``restore()``).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time


class DelayProxy:
    """Relays ``127.0.0.1:<port>`` to ``upstream``, each direction delayed by ``rtt_s / 2``."""

    def __init__(self, upstream_host: str, upstream_port: int, *, rtt_s: float = 0.0) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.one_way_s = rtt_s / 2
        self._server = socket.create_server(("127.0.0.1", 0))
        self.host = "127.0.0.1"
        self.port = int(self._server.getsockname()[1])
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._cut = False
        self._closed = False
        self.bytes_up = 0  # client -> broker
        self.bytes_down = 0  # broker -> client
        self.connections = 0
        self._acceptor = threading.Thread(target=self._accept, name="proxy-accept", daemon=True)
        self._acceptor.start()

    def cut(self) -> None:
        """Drop every relayed connection and refuse new ones (a dead zone)."""
        with self._lock:
            self._cut = True
            conns, self._conns = self._conns, []
        for c in conns:
            _close(c)

    def restore(self) -> None:
        with self._lock:
            self._cut = False

    def reset_counters(self) -> None:
        with self._lock:
            self.bytes_up = self.bytes_down = 0

    def close(self) -> None:
        self._closed = True
        self.cut()
        _close(self._server)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            with self._lock:
                refuse = self._cut
            if refuse:
                _close(client)
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                _close(client)
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.settimeout(None)
            with self._lock:
                self._conns += [client, upstream]
                self.connections += 1
            for src, dst, up in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(
                    target=self._pump, args=(src, dst, up), name="proxy-pump", daemon=True
                ).start()

    def _pump(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        # A reader stamps each chunk with its due time; a writer sends it when due. Chunks in
        # flight overlap, so the link has latency but no artificial bandwidth limit.
        due: list[tuple[float, int, bytes]] = []
        cond = threading.Condition()
        counter = itertools.count()
        done = threading.Event()

        def writer() -> None:
            while True:
                with cond:
                    while not due and not done.is_set():
                        cond.wait(0.5)
                    if not due and done.is_set():
                        break
                    when, _, data = due[0]
                    wait = when - time.monotonic()
                    if wait > 0:
                        cond.wait(wait)
                        continue
                    heapq.heappop(due)
                try:
                    dst.sendall(data)
                except OSError:
                    break
            _close(dst)

        w = threading.Thread(target=writer, name="proxy-write", daemon=True)
        w.start()
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            with self._lock:
                if up:
                    self.bytes_up += len(data)
                else:
                    self.bytes_down += len(data)
            with cond:
                heapq.heappush(due, (time.monotonic() + self.one_way_s, next(counter), data))
                cond.notify()
        done.set()
        with cond:
            cond.notify()
        _close(src)


def _close(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    s.close()
