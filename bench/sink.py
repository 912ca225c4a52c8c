#!/usr/bin/env python3
"""Upload sink for `bench/run.sh stream`.

An HTTP/1.1 server that reads each request body completely (Content-Length or chunked),
throws it away, and answers 200 with the number of body bytes it received, e.g.
{"received": 1073741824}. Nothing is kept in memory beyond one 1 MiB read buffer.

Usage: sink.py PORT   (listens on 127.0.0.1)
"""

import http.server
import json
import sys

BUF = bytearray(1 << 20)


class Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # no per-request logging
        pass

    def _discard(self, n):
        view = memoryview(BUF)
        left = n
        while left > 0:
            got = self.rfile.readinto(view[: min(left, len(BUF))])
            if not got:
                raise ConnectionError("client closed the connection mid-body")
            left -= got
        return n

    def _read_chunked(self):
        total = 0
        while True:
            line = self.rfile.readline(1024)
            if not line:
                raise ConnectionError("client closed the connection mid-body")
            size = int(line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                # trailers, then the blank line
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return total
            total += self._discard(size)
            self.rfile.readline(1024)  # CRLF after the chunk data

    def _handle(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            received = self._read_chunked()
        else:
            received = self._discard(int(self.headers.get("Content-Length", "0")))
        body = json.dumps({"received": received}).encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_PUT = _handle
    do_POST = _handle
    do_GET = _handle


def main():
    port = int(sys.argv[1])
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Sink)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
