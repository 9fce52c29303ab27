"""A tiny HTTP relay for hack/kind-e2e.sh, run in the cluster from the fixtures image.

Why it exists: `kubectl port-forward svc/NAME` resolves the Service to ONE pod when it starts and
tunnels every connection to that pod, so traffic sent through a port-forward to the `<md>`
Service would never reach a canary (the `replicas` router splits by the pods behind that
Service). The harness port-forwards to this relay instead, and the relay opens a new connection
to the upstream Service for every request, so kube-proxy spreads the requests over the Service's
pods as it does for real clients.

Standard library only (it runs on the Weir image's interpreter):

    python relay.py --upstream http://iris.weir-e2e.svc:80 --port 8000
"""

from __future__ import annotations

import argparse
import http.client
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from urllib.parse import urlsplit

# Hop-by-hop headers (RFC 9110 7.6.1) and those the relay sets itself.
SKIPPED_HEADERS = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
}
UPSTREAM_TIMEOUT_S = 30.0


def make_handler(host: str, port: int) -> type[BaseHTTPRequestHandler]:
    class Relay(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive towards the client (the port-forward)

        def _relay(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in SKIPPED_HEADERS}
            # A new upstream connection per request: kube-proxy picks a pod per connection.
            upstream = http.client.HTTPConnection(host, port, timeout=UPSTREAM_TIMEOUT_S)
            try:
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                payload = response.read()
                status = response.status
                answer_headers = [
                    (k, v) for k, v in response.getheaders() if k.lower() not in SKIPPED_HEADERS
                ]
            except OSError as error:
                status = 502
                payload = f'{{"error": "relay: upstream {host}:{port}: {error}"}}'.encode()
                answer_headers = [("Content-Type", "application/json")]
            finally:
                upstream.close()
            self.send_response(status)
            for key, value in answer_headers:
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _relay

        def log_message(self, format: str, *args: object) -> None:
            pass  # one line per request would drown the pod's log

    return Relay


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="http://HOST[:PORT] of the Service")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    target = urlsplit(args.upstream)
    if target.scheme != "http" or not target.hostname:
        parser.error(f"--upstream must be http://HOST[:PORT], got {args.upstream!r}")
    server = ThreadingHTTPServer(
        (args.host, args.port), make_handler(target.hostname, target.port or 80)
    )
    server.daemon_threads = True

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"relay: {args.host}:{server.server_address[1]} -> {args.upstream}", flush=True)
    server.serve_forever()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
