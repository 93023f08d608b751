"""A STUN server on a loopback UDP port (RFC 5389 Binding requests only), for tests whose
server is configured with STUN: without an answer, aiortc's candidate gathering waits 5 s."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from aioice import stun


@contextmanager
def stun_server() -> Iterator[int]:
    """Answers Binding requests with the address they came from; yields the port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, addr = sock.recvfrom(2048)
                request = stun.parse_message(data)
            except (TimeoutError, ValueError):
                continue
            if request.message_method != stun.Method.BINDING:
                continue
            response = stun.Message(
                message_method=stun.Method.BINDING,
                message_class=stun.Class.RESPONSE,
                transaction_id=request.transaction_id,
            )
            response.attributes["XOR-MAPPED-ADDRESS"] = addr
            sock.sendto(bytes(response), addr)

    thread = threading.Thread(target=serve, name="stun", daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        sock.close()
