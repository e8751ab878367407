"""Raw MQTT 3.1.1 packets that no real client sends: a PUBLISH whose header declares more
bytes than a broker should take, streamed without holding them in memory."""

from __future__ import annotations

import socket

MiB = 1024 * 1024


def _length(n: int) -> bytes:
    """MQTT's variable-length "remaining length" encoding."""
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(text: bytes) -> bytes:
    return len(text).to_bytes(2, "big") + text


def connect(port: int, client_id: str) -> socket.socket:
    """An MQTT 3.1.1 connection to ``127.0.0.1:port`` the broker accepted (CONNACK 0)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    body = _string(b"MQTT") + b"\x04\x02\x00\x3c" + _string(client_id.encode())
    sock.sendall(b"\x10" + _length(len(body)) + body)
    connack = sock.recv(4)
    assert connack == b"\x20\x02\x00\x00", f"CONNACK {connack!r}"
    return sock


def publish_streamed(port: int, topic: str, size: int) -> int:
    """Publishes ``size`` zero bytes on ``topic`` (QoS 0), 1 MiB at a time.

    Returns:
        How many payload bytes were sent before the broker closed the connection
        (``size`` when it took them all).
    """
    sock = connect(port, "packet-kit")
    with sock:
        name = _string(topic.encode())
        sock.sendall(b"\x30" + _length(len(name) + size) + name)
        piece, sent = bytes(MiB), 0
        try:
            while sent < size:
                sent += sock.send(piece[:size - sent])
        except OSError:  # reset or broken pipe: the broker hung up
            pass
        return sent
