"""The bar lane over real loopback sockets: packets arrive whole and in order, a connection
without the token or with a bad frame is closed and delivers nothing, a sender sees a killed
receiver before it sends, and ``close(wait_s)`` returns once everything sent is handed on."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
import time

import pytest

from engine.lane import MAX_FRAME, TOKEN_BYTES, LaneListener, LaneSender
from engine.packets import BarPacket, pack, to_bytes, unpack
from tests.engine.test_packets import entries, same


class Sink:
    def __init__(self, delay_s: float = 0.0) -> None:
        self.got: list[BarPacket] = []
        self.delay_s = delay_s
        self.listener = LaneListener("127.0.0.1", self.take)

    def take(self, packet: BarPacket) -> None:
        time.sleep(self.delay_s)
        self.got.append(packet)


def batches(n: int) -> list[list[dict]]:
    base = entries()
    return [[{**e, "wm": e["wm"] + k} for e in base[: 1 + k % 3]] for k in range(n)]


def wait_closed(conn: socket.socket, timeout_s: float = 5.0) -> None:
    conn.settimeout(timeout_s)
    # the listener closed it: an end of stream, or a reset where data was left unread
    with contextlib.suppress(ConnectionResetError):
        assert conn.recv(1) == b""


def test_packets_arrive_whole_and_in_order():
    sink = Sink()
    sent = batches(60)
    sender = LaneSender(sink.listener.address, sink.listener.token)
    assert all(sender.send(pack(b)) for b in sent)
    sender.close(wait_s=5.0)
    assert len(sink.got) == len(sent)
    for packet, b in zip(sink.got, sent, strict=True):
        same(unpack(packet), b)


def test_close_waits_until_everything_is_handed_on():
    sink = Sink(delay_s=0.05)
    sender = LaneSender(sink.listener.address, sink.listener.token)
    for b in batches(8):
        assert sender.send(pack(b))
    assert len(sink.got) < 8  # the receiver is still busy
    sender.close(wait_s=5.0)
    assert len(sink.got) == 8


@pytest.mark.parametrize("case", ["wrong token", "bad frame", "oversized frame"])
def test_bad_connections_are_closed_and_deliver_nothing(case):
    sink = Sink()
    conn = socket.create_connection(sink.listener.address)
    good = to_bytes(pack(entries()))
    token = bytes(TOKEN_BYTES) if case == "wrong token" else sink.listener.token
    body = {"bad frame": b"XXXX" + good[4:]}.get(case, good)
    size = MAX_FRAME + 1 if case == "oversized frame" else len(body)
    conn.sendall(token + struct.pack("<I", size) + body)
    wait_closed(conn)
    assert sink.got == []
    # the listener still serves a good sender
    sender = LaneSender(sink.listener.address, sink.listener.token)
    assert sender.send(pack(entries()))
    sender.close(wait_s=5.0)
    assert len(sink.got) == 1


def test_a_killed_receiver_is_seen_before_sending():
    code = (
        "import sys, time\n"
        "from engine.lane import LaneListener\n"
        "lane = LaneListener('127.0.0.1', lambda packet: None)\n"
        "print(lane.address[1], lane.token.hex(), flush=True)\n"
        "time.sleep(600)\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            cwd=root)  # fmt: skip
    try:
        port, token = proc.stdout.readline().split()
        sender = LaneSender(("127.0.0.1", int(port)), bytes.fromhex(token))
        assert sender.send(pack(entries()))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        time.sleep(0.2)  # the kernel's close reaches the sender's socket
        assert not sender.send(pack(entries()))
        sender.close()
    finally:
        proc.kill()
        proc.wait(10)


def test_receiver_failure_does_not_end_the_lane():
    got: list[BarPacket | None] = []

    def take(packet: BarPacket) -> None:
        if not got and packet.wm[0] == -7:  # the first packet fails in the receiver
            got.append(None)
            raise RuntimeError("boom")
        got.append(packet)

    listener = LaneListener("127.0.0.1", take)
    sender = LaneSender(listener.address, listener.token)
    sent = batches(3)
    assert all(sender.send(pack(b)) for b in sent)
    sender.close(wait_s=5.0)
    assert got[0] is None and len(got) == 3
    same(unpack(got[2]), sent[2])
