"""A minimal Python web app for wharf: standard library HTTP server plus one PyPI dependency.

The build (`pip install --target vendor -r requirements.txt`) puts the dependency in
vendor/, next to this file; without the build the import of `six` fails at startup.
"""

import os
import signal
import sys
import threading

VENDOR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vendor")
sys.path.insert(0, VENDOR)

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402

import six  # noqa: E402  (from vendor/, installed by the build)

if not os.path.abspath(six.__file__).startswith(VENDOR + os.sep):
    sys.exit(f"python-app: six was not installed into {VENDOR} (did the build run?)")

GREETING = six.ensure_binary("Hello from Python!\n")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every response has a Content-Length

    def do_GET(self):
        if self.path == "/":
            status, body = 200, GREETING
        else:
            status, body = 404, b"not found\n"
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass  # no per-request logging


def main():
    port = int(os.environ.get("PORT", "8080"))
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True

    def on_sigterm(signum, frame):
        print("SIGTERM received, shutting down")
        # shutdown() waits for serve_forever() to return, so call it from another thread.
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, on_sigterm)
    print(f"Listening on port {port} (six {six.__version__})")
    server.serve_forever()
    server.server_close()
    sys.exit(0)


if __name__ == "__main__":
    main()
