"""A local stand-in for the SDSS SAS on 127.0.0.1 with injectable faults (tests only)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Faults:
    """Faults for one path, consumed request by request."""

    errors: int = 0            # answer the first N requests with HTTP 500
    cut_at: int | None = None  # on the next full request, close the connection after this many bytes
    delay_s: float = 0.0       # sleep before the body on the next request
    corrupt: bool = False      # serve garbage instead of the file (every time)
    redirect: str = ""         # answer 302 with this Location (every time)
    chunked: bool = False      # send the body chunked, without Content-Length
    trickle_s: float = 0.0     # send the body one byte every trickle_s seconds (until the client leaves)


@dataclass
class FakeSAS:
    files: dict[str, bytes] = field(default_factory=dict)
    faults: dict[str, Faults] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)
    url: str = ""


def start(sas: FakeSAS) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:  # noqa: N802
            path = self.path.split("?", 1)[0].lstrip("/")
            sas.requests.append((path, self.headers.get("Range")))
            body = sas.files.get(path)
            fault = sas.faults.get(path, Faults())
            if fault.redirect:
                self.send_response(302)
                self.send_header("Location", fault.redirect)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if body is None:
                return self._plain(404, b"not found")
            if fault.errors > 0:
                fault.errors -= 1
                return self._plain(500, b"server error")
            if fault.corrupt:
                body = b"garbage" * 100
            start = 0
            rng = self.headers.get("Range")
            if rng and rng.startswith("bytes="):
                start = int(rng[6:].split("-")[0])
                if start >= len(body):
                    return self._plain(416, b"")
            payload = body[start:]
            if fault.chunked:
                self.send_response(200)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for i in range(0, len(payload), 1 << 16):
                    piece = payload[i:i + (1 << 16)]
                    self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")
                return
            self.send_response(206 if start else 200)
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Accept-Ranges", "bytes")
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.end_headers()
            if fault.delay_s:
                delay, fault.delay_s = fault.delay_s, 0.0
                time.sleep(delay)
            if fault.trickle_s:
                try:
                    for k in range(len(payload)):
                        self.wfile.write(payload[k:k + 1])
                        self.wfile.flush()
                        time.sleep(fault.trickle_s)
                except OSError:  # the client gave up
                    self.close_connection = True
                return
            if fault.cut_at is not None and not start:
                cut, fault.cut_at = fault.cut_at, None
                self.wfile.write(payload[:cut])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(payload)

        def _plain(self, code: int, text: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sas.url = f"http://127.0.0.1:{server.server_address[1]}/sas"
    return server
