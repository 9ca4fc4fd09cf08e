"""The simulator's HTTP side: a threading server that writes each decided answer.

Decides how an answer goes over the wire (whole, dropped, cut in half, or trickled a byte at
a time), how long an answer waits, and how serving starts and stops: `stop()` ends every
wait and trickle at once and closes idle keep-alive connections. What an answer says is
decided elsewhere, by the callable the server is given.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pipelines.synthflow.simulator.api import Answer

# (method, path, Authorization header or None) -> the answer to write
Decide = Callable[[str, str, str | None], Answer]


class Server:
    """Serves one simulator's answers on loopback; can start again after `stop()`."""

    def __init__(self, decide: Decide) -> None:
        self.decide = decide
        self.stopping = threading.Event()  # set by stop(): ends every wait and trickle
        self._http: _HttpServer | None = None
        self._thread: threading.Thread | None = None
        self._trickling = 0
        self._trickling_lock = threading.Lock()

    @property
    def serving(self) -> bool:
        return self._http is not None

    @property
    def base_url(self) -> str:
        if self._http is None:
            raise RuntimeError("the simulator is not serving; call start() first")
        host, port = self._http.server_address[:2]
        return f"http://{host}:{port}/v2"

    @property
    def trickles_in_progress(self) -> int:
        with self._trickling_lock:
            return self._trickling

    def start(self, host: str, port: int) -> str:
        http = self._bind(host, port)
        self._thread = threading.Thread(
            target=http.serve_forever,
            kwargs={"poll_interval": 0.02},  # how long stop() waits at most
            name="synthflow-simulator",
            daemon=True,
        )
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        http, thread = self._http, self._thread
        if http is None:
            return
        self.stopping.set()
        http.shutdown()
        if thread is not None:  # else serve_forever() closes up as it returns
            thread.join()
            self._close()

    def serve_forever(
        self, host: str, port: int, on_ready: Callable[[str], None] | None = None
    ) -> None:
        http = self._bind(host, port)
        try:
            if on_ready is not None:
                on_ready(self.base_url)
            http.serve_forever(poll_interval=0.2)
        except KeyboardInterrupt:
            pass
        finally:
            self._close()

    def trickle_started(self) -> None:
        with self._trickling_lock:
            self._trickling += 1

    def trickle_ended(self) -> None:
        with self._trickling_lock:
            self._trickling -= 1

    def _bind(self, host: str, port: int) -> _HttpServer:
        if self._http is not None:
            raise RuntimeError(f"the simulator is already serving at {self.base_url}")
        self.stopping.clear()
        self._http = _HttpServer((host, port), self)
        return self._http

    def _close(self) -> None:
        http = self._http
        if http is None:
            return
        self._http = self._thread = None
        self.stopping.set()
        http.server_close()
        http.close_connections()


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # idle keep-alive connections must not hold up stop()
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], owner: Server) -> None:
        self.owner = owner
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up (timeout, cancelled read, stop()) is normal traffic here;
        # anything else is a simulator bug and keeps its traceback.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def close_connections(self) -> None:
        with self.connections_lock:
            connections = list(self.connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = 120  # seconds an idle keep-alive connection is kept
    server: _HttpServer

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # silent: request lines would only clutter test and demo output

    def parse_request(self) -> bool:
        self.arrived = time.monotonic()  # the request line is in; its latency counts from here
        return super().parse_request()

    def do_GET(self) -> None:
        server = self.server.owner
        answer = server.decide("GET", self.path, self.headers.get("Authorization"))
        # Latency is the time from the request's arrival to its answer, so the simulator's own
        # work (parsing, deciding, encoding, waiting for its GIL) is part of it, not added on.
        wait_s = self.arrived + answer.delay_s - time.monotonic()
        if wait_s > 0:
            server.stopping.wait(wait_s)
        self._write(answer)

    def _not_allowed(self) -> None:
        length = self.headers.get("Content-Length", "")
        if length.isdigit():
            self.rfile.read(min(int(length), 1 << 20))
        # Whatever of a body is left unread must not pass for the next request.
        self.close_connection = True
        self._write(self.server.owner.decide(self.command, self.path, None))

    do_POST = do_PUT = do_PATCH = do_DELETE = _not_allowed

    def _write(self, answer: Answer) -> None:
        if answer.mode == "drop":
            self.close_connection = True
            return
        head = [
            f"HTTP/1.1 {answer.status} {HTTPStatus(answer.status).phrase}",
            f"Date: {self.date_time_string()}",
            "Server: synthflow-simulator",
            f"Content-Type: {answer.content_type}",
            f"Content-Length: {len(answer.body)}",
            f"X-Request-Id: {answer.request_id}",
            *(f"{name}: {value}" for name, value in answer.headers),
        ]
        head_bytes = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        body = answer.body
        if answer.mode == "trickle":
            self._trickle(head_bytes, body, answer.trickle_s)
            return
        if answer.mode == "truncate":
            body = body[: len(body) // 2]
            self.close_connection = True
        # One write for head and body: two small writes would meet Nagle and delayed ACKs.
        self.wfile.write(head_bytes + body)

    def _trickle(self, head: bytes, body: bytes, interval_s: float) -> None:
        """The head at once, then the body a byte per `interval_s`, until done or abandoned.

        A client that hung up shows as a failed write (the first write after its FIN may still
        succeed, so that takes up to two intervals); `stop()` sets `stopping`, which ends the
        wait at once. Either way the thread returns instead of dribbling into the void.
        """
        server = self.server.owner
        server.trickle_started()
        try:
            self.wfile.write(head)
            for at in range(len(body)):
                if server.stopping.wait(interval_s):
                    self.close_connection = True  # the promised Content-Length will not come
                    return
                self.wfile.write(body[at : at + 1])
        except OSError:  # BrokenPipe, ConnectionReset, or the socket shut by stop()
            self.close_connection = True
        finally:
            server.trickle_ended()
