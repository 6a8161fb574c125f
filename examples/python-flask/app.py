"""The seed's Flask backend, rewritten for socketless's upstream mode.

`socketless serve --upstream http://127.0.0.1:5000` (or `socketless dev --upstream ...`) calls this
app for every connect, message and disconnect, with the gateway's context in `x-socketless-*`
headers. It keeps no sessions and holds no AWS credentials: `serve` does both. To reach a client
on its own, it posts to `serve`'s internal API on localhost.

It is also a chat room: every client joins the group `lobby` at connect; a message
`{"join": "room"}` joins another, `{"leave": "room"}` leaves it, and `{"room": "x", "text": "..."}`
publishes to every member of `x` (one call here; `serve` fans it out).

    pip install flask
    python app.py            # listens on 127.0.0.1:5000

Environment:
    HOST, PORT                  where it listens (default 127.0.0.1 and 5000). In a Kubernetes pod,
                                set HOST=0.0.0.0 so the kubelet's probes reach it on the pod IP.
    SOCKETLESS_INTERNAL_URL     serve's internal API (default http://127.0.0.1:9090)
    SOCKETLESS_INTERNAL_TOKEN   when set (the same value as serve's), sent as
                                `Authorization: Bearer ...` on every internal API call
"""
import json
import os
import urllib.parse
import urllib.request

from flask import Flask, request

INTERNAL = os.environ.get("SOCKETLESS_INTERNAL_URL", "http://127.0.0.1:9090")
TOKEN = os.environ.get("SOCKETLESS_INTERNAL_TOKEN", "")
app = Flask(__name__)


def internal(method, path, body=b""):
    """Calls serve's internal API (no AWS credentials needed); returns the answer's body."""
    headers = {"Authorization": f"Bearer {TOKEN}"} if TOKEN else {}
    req = urllib.request.Request(f"{INTERNAL}{path}", data=body, headers=headers, method=method)
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.read()


def q(segment):
    return urllib.parse.quote(segment, safe="")


def push(connection_id, text):
    """Sends a frame to one client."""
    internal("POST", f"/v1/connections/{q(connection_id)}/messages", text.encode())


def chat(connection_id, command):
    """Chat-room commands; None when the message is not one."""
    if "join" in command:
        internal("PUT", f"/v1/groups/{q(command['join'])}/connections/{q(connection_id)}")
        return f"joined {command['join']}"
    if "leave" in command:
        internal("DELETE", f"/v1/groups/{q(command['leave'])}/connections/{q(connection_id)}")
        return f"left {command['leave']}"
    if "room" in command and "text" in command:
        frame = json.dumps({"room": command["room"], "from": connection_id, "text": command["text"]})
        answer = json.loads(internal("POST", f"/v1/groups/{q(command['room'])}/messages", frame.encode()))
        return f"sent to {answer['delivered']} of {answer['members']}"
    return None


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
    # Groups answered here are joined with the session: every client is in the lobby.
    return "", 200, {"x-socketless-attribute-room": "lobby", "x-socketless-groups": "lobby"}


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
    try:
        command = json.loads(text)
    except ValueError:
        command = None
    if isinstance(command, dict):
        answer = chat(connection_id, command)
        if answer is not None:
            return answer
    # A push that does not wait for this request: the way to reach a client at any time.
    push(connection_id, f"Pushed: {text}")
    # The answer's body is the reply to the client.
    return f"Got message: {text}"


@app.post("/disconnect")
def disconnect():
    return "", 200


if __name__ == "__main__":
    app.run(host=os.environ.get("HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "5000")))
