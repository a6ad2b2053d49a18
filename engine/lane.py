"""The bar lane: a direct TCP socket carrying ``BarPacket`` frames from a feed to a pair book.

A Ray actor call costs about 1.5 ms one way on a 2-core machine, and much more at its worst; a
frame on a socket costs tens of microseconds. ``LaneListener`` (in the receiving process) binds
a port on the node's address and hands each frame's packet to a callback, in order, per
connection; ``LaneSender`` (in the sending process) connects to it. The caller that owns both
ends (actors/feed.py, actors/pair.py) keeps its actor calls as the path that always works: a
lane is opened only once no call is in flight, so packets never overtake each other, and a
sender whose peer is gone says so (``send`` returns False) before it sends anything.

A connection starts with the listener's random token (``TOKEN_BYTES``, handed out over the
authenticated Ray call), or it is closed unread; then come frames of a 4-byte little-endian
length and a ``packets.to_bytes`` body (data only, checked by ``packets.from_bytes``; at most
``MAX_FRAME`` bytes).
"""

from __future__ import annotations

import hmac
import logging
import secrets
import select
import socket
import struct
import threading
import time
from collections.abc import Callable

from engine.packets import BarPacket, from_bytes, to_bytes

log = logging.getLogger(__name__)

TOKEN_BYTES = 16
#: the largest frame a listener takes (bytes): a minute of 1s bars for 1,000 symbols is ~4 MB
MAX_FRAME = 64 << 20
#: seconds a new connection has to present its token
HANDSHAKE_S = 5.0
_LEN = struct.Struct("<I")


def _recv_exact(conn: socket.socket, n: int) -> bytes | None:
    """``n`` bytes from ``conn``; None at end of stream (also mid-way: a cut frame)."""
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = conn.recv_into(view[got:])
        if k == 0:
            return None
        got += k
    return bytes(buf)


class LaneListener:
    """A listening socket on ``host`` (port chosen by the system); each accepted connection is
    read by a thread of its own, which calls ``on_packet`` with each packet in arrival order.
    ``address`` and ``token`` are what a ``LaneSender`` needs."""

    def __init__(self, host: str, on_packet: Callable[[BarPacket], None]) -> None:
        self.token = secrets.token_bytes(TOKEN_BYTES)
        self._on_packet = on_packet
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.create_server((host, 0), family=family)
        self.address: tuple[str, int] = (host, self._sock.getsockname()[1])
        threading.Thread(target=self._accept, name="pairstack-lane-accept", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:  # the listening socket failed: no more connections
                return
            threading.Thread(target=self._serve, args=(conn,), name="pairstack-lane",
                             daemon=True).start()  # fmt: skip

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.settimeout(HANDSHAKE_S)
                token = _recv_exact(conn, TOKEN_BYTES)
                if token is None or not hmac.compare_digest(token, self.token):
                    log.warning("bar lane: a connection without the token was closed")
                    return
                conn.settimeout(None)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                while (head := _recv_exact(conn, _LEN.size)) is not None:
                    (size,) = _LEN.unpack(head)
                    if size > MAX_FRAME:
                        log.warning("bar lane: a frame of %d bytes (at most %d): closed",
                                    size, MAX_FRAME)  # fmt: skip
                        return
                    frame = _recv_exact(conn, size)
                    if frame is None:
                        return
                    packet = from_bytes(frame)
                    try:
                        self._on_packet(packet)
                    except Exception:  # the receiver's own failure: the next frame still comes
                        log.exception("bar lane: the receiver failed on a packet")
            except (OSError, ValueError) as exc:
                log.warning("bar lane: connection closed (%s)", exc)


class LaneSender:
    """One connection to a ``LaneListener``. ``send`` blocks while the receiver is behind (the
    socket's buffers are the bound), at most ``timeout_s``."""

    def __init__(self, address: tuple[str, int], token: bytes, timeout_s: float = 30.0) -> None:
        self._sock = socket.create_connection(address, timeout=min(timeout_s, 2.0))
        self._sock.settimeout(timeout_s)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock.sendall(token)
        self._poll = select.poll()  # not select(): no limit on the descriptor's number
        self._poll.register(self._sock, select.POLLIN)

    def send(self, packet: BarPacket) -> bool:
        """Send one packet; False, and nothing sent, when the peer is gone (the receiver never
        writes, so a readable socket is a closed or reset one); False also when the send
        failed midway (the receiver drops a cut frame)."""
        try:
            if self._poll.poll(0):  # readable, hung up or in error
                return False
            body = to_bytes(packet)
            self._sock.sendall(_LEN.pack(len(body)) + body)
            return True
        except OSError:
            return False

    def close(self, wait_s: float = 0.0) -> None:
        """Close; with ``wait_s``, first end the stream and wait (at most that long) for the
        receiver to close its side: everything sent has then been handed on."""
        try:
            if wait_s > 0:
                self._sock.shutdown(socket.SHUT_WR)
                deadline = time.monotonic() + wait_s
                while (left := deadline - time.monotonic()) > 0:
                    self._sock.settimeout(left)
                    if not self._sock.recv(4096):
                        break
        except OSError:
            pass
        finally:
            self._sock.close()
