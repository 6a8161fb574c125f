"""The seed's Flask backend, rewritten for socketless's upstream mode.

`socketless serve --upstream http://127.0.0.1:5000` (or `socketless dev --upstream ...`) calls this
app for every connect, message and disconnect, with the gateway's context in `x-socketless-*`
headers. It keeps no sessions and holds no AWS credentials: `serve` does both. To reach a client
on its own, it posts to `serve`'s internal API on localhost.

    pip install flask
    python app.py            # listens on 127.0.0.1:5000

Environment:
    HOST, PORT                  where it listens (default 127.0.0.1 and 5000). In a Kubernetes pod,
                                set HOST=0.0.0.0 so the kubelet's probes reach it on the pod IP.
    SOCKETLESS_INTERNAL_URL     serve's internal API (default http://127.0.0.1:9090)
    SOCKETLESS_INTERNAL_TOKEN   when set (the same value as serve's), sent as
                                `Authorization: Bearer ...` on every internal API call
"""
import os
import urllib.parse
import urllib.request

from flask import Flask, request

INTERNAL = os.environ.get("SOCKETLESS_INTERNAL_URL", "http://127.0.0.1:9090")
TOKEN = os.environ.get("SOCKETLESS_INTERNAL_TOKEN", "")
app = Flask(__name__)


def push(connection_id, text):
    """Sends a frame to one client through serve's internal API (no AWS credentials needed)."""
    url = f"{INTERNAL}/v1/connections/{urllib.parse.quote(connection_id, safe='')}/messages"
    headers = {"Authorization": f"Bearer {TOKEN}"} if TOKEN else {}
    req = urllib.request.Request(url, data=text.encode(), headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.status


@app.get("/healthz")
def healthz():
    return "ok\n"


@app.post("/connect")
def connect():
    # Refuse a handshake by answering anything but 2xx: the client sees this status.
    if "blocked" in request.headers.get("x-socketless-user-agent", ""):
        return "go away", 403
    # Attributes answered here stay on the session: serve sends them back as the same headers on
    # every later message and disconnect of this connection, on any pod, from its cache.
    return "", 200, {"x-socketless-attribute-room": "lobby"}


@app.post("/message")
def message():
    connection_id = request.headers["x-socketless-connection-id"]
    text = request.get_data(as_text=True)
    if text == "whoami":
        # Who the session belongs to, as serve stored it at connect (the principal only with a
        # $connect authorizer); a client cannot set these headers.
        principal = request.headers.get("x-socketless-principal-id", "-")
        room = request.headers.get("x-socketless-attribute-room", "-")
        return f"principal={principal} room={room}"
    # A push that does not wait for this request: the way to reach a client at any time.
    push(connection_id, f"Pushed: {text}")
    # The answer's body is the reply to the client.
    return f"Got message: {text}"


@app.post("/disconnect")
def disconnect():
    return "", 200


if __name__ == "__main__":
    app.run(host=os.environ.get("HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "5000")))
