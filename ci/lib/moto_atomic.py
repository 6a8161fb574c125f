"""moto's server (the tests' DynamoDB), with every request answered whole before the next begins.

moto serves requests on several threads and checks a conditional write's condition apart from
the write, with no lock between them: two PutItems conditioned on one version, arriving together,
can both succeed. DynamoDB applies each item's conditional writes one at a time, and socketless
relies on that (a session's claim, a resume record's version). Here one lock is held around each
request, so moto's conditional writes are atomic as DynamoDB's are. Everything else is moto's own
server: the same app, the same arguments, the same `/moto-api/`. DynamoDB's part of the app is
built before the port opens, so a client that waits for the port does not meet a first DynamoDB
request slowed by moto loading its DynamoDB code.

Usage: python3 ci/lib/moto_atomic.py [-H HOST] [-p PORT]
Exits 3, saying why, when this Python cannot import moto's server (pip install 'moto[server]').
"""

import argparse
import os
import signal
import sys
import threading

try:
    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import run_simple
except ImportError as err:
    sys.stderr.write(
        f"moto_atomic: {sys.executable} cannot import moto's server ({err}); "
        "install it with pip install 'moto[server]' (ci/requirements.txt pins it)\n"
    )
    sys.exit(3)


def atomic(app):
    """The WSGI app `app`, one request at a time: the response is built and read inside the lock."""
    lock = threading.Lock()

    def serve(environ, start_response):
        with lock:
            body = app(environ, start_response)
            try:
                return [b"".join(body)]
            finally:
                close = getattr(body, "close", None)
                if close is not None:
                    close()

    return serve


def main():
    parser = argparse.ArgumentParser(description="moto's server, one request at a time")
    parser.add_argument("-H", "--host", default="127.0.0.1", help="address to bind")
    parser.add_argument("-p", "--port", type=int, default=5000, help="port to listen on")
    args = parser.parse_args()
    os.environ.setdefault("MOTO_PORT", str(args.port))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    app = DomainDispatcherApplication(create_backend_app)
    app.app_instances["dynamodb"] = create_backend_app("dynamodb")
    run_simple(args.host, args.port, atomic(app), threaded=True)


if __name__ == "__main__":
    main()
