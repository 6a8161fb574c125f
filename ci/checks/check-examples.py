#!/usr/bin/env python3
"""The example apps under examples/, end to end: for each one, `socketless dev --upstream` first
and the app after it (gateway → serve → app), then a WebSocket client that sends a message and
must get the app's reply and the frame the app pushed through serve's internal API, and a client
whose handshake the app refuses. Until the app answers, serve is not ready and the gateway's port
refuses connections. Each app runs twice: as it comes, and with SOCKETLESS_INTERNAL_TOKEN set for
both (and HOST set), where the internal API refuses calls without the token and the app's push
must carry it. Each app also sets a session attribute at connect and must see it on a later
message (`whoami`), with no principal (no authorizer). The Flask app is also a chat room: a
client that joins a group gets what another publishes to it. Prints `examples: N passed, N failed`.

Usage: python3 ci/checks/check-examples.py path/to/socketless   (needs flask, websockets, node)
"""
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import websockets

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from checklib import Tally, free_port, http, stop, wait_status  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/debug/socketless")
EXAMPLES = [
    # name, command, reply prefix, push prefix
    ("python-flask", [sys.executable, os.path.join(ROOT, "examples/python-flask/app.py")], "Got message: ", "Pushed: "),
    ("node", ["node", os.path.join(ROOT, "examples/node/server.js")], "Node got: ", "Pushed from Node: "),
]
TALLY = Tally("examples")
check = TALLY.check


async def exchange(url, reply, pushed):
    async with websockets.connect(url, open_timeout=10) as ws:
        await ws.send("hello")
        frames = set()
        deadline = time.time() + 10
        while time.time() < deadline and len(frames) < 2:
            try:
                frames.add(await asyncio.wait_for(ws.recv(), timeout=deadline - time.time()))
            except asyncio.TimeoutError:
                break
    return frames == {reply + "hello", pushed + "hello"}, frames


async def whoami(url):
    async with websockets.connect(url, open_timeout=10) as ws:
        await ws.send("whoami")
        return await asyncio.wait_for(ws.recv(), timeout=10)


async def chat(url):
    """Two clients: one joins `room:1` ({"join": ...}), the other publishes to it ({"room": ...});
    the member gets the frame, the publisher only its answer."""
    async with websockets.connect(url, open_timeout=10) as member, websockets.connect(url, open_timeout=10) as other:
        await member.send('{"join": "room:1"}')
        joined = await asyncio.wait_for(member.recv(), timeout=10)
        await other.send('{"room": "room:1", "text": "hi all"}')
        answer = await asyncio.wait_for(other.recv(), timeout=10)
        frame = json.loads(await asyncio.wait_for(member.recv(), timeout=10))
        try:
            extra = await asyncio.wait_for(other.recv(), timeout=0.3)
        except asyncio.TimeoutError:
            extra = None
    ok = (joined == "joined room:1" and answer == "sent to 1 of 1" and frame.get("text") == "hi all"
          and frame.get("room") == "room:1" and extra is None)
    return ok, (joined, answer, frame, extra)


async def refused(url):
    try:
        async with websockets.connect(url, user_agent_header="blocked-client", open_timeout=10):
            return None
    except websockets.InvalidStatus as e:
        return e.response.status_code


TOKEN = "example-internal-token-0123456789"


def refuses_connections(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def run(name, command, reply, pushed, token=None):
    if shutil.which(command[0]) is None and not os.path.exists(command[0]):
        check(f"{name}: {command[0]} is installed", False, "missing")
        return
    if token:
        name = f"{name} (internal token)"
    app_port, gw, internal = free_port(), free_port(), free_port()
    base = {k: v for k, v in os.environ.items() if k != "SOCKETLESS_INTERNAL_TOKEN"}
    env = dict(base, PORT=str(app_port), SOCKETLESS_INTERNAL_URL=f"http://127.0.0.1:{internal}")
    dev_env = dict(base)
    if token:
        env.update(SOCKETLESS_INTERNAL_TOKEN=token, HOST="127.0.0.1")
        dev_env.update(SOCKETLESS_INTERNAL_TOKEN=token)
    dev = subprocess.Popen([BIN, "dev", "--listen", f"127.0.0.1:{gw}", "--internal-listen", f"127.0.0.1:{internal}",
                            "--upstream", f"http://127.0.0.1:{app_port}"], env=dev_env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    app = None
    try:
        # Until the app answers, serve is not ready and no client is accepted.
        time.sleep(0.5)
        check(f"{name}: not ready before the app answers", http("GET", f"http://127.0.0.1:{internal}/readyz", timeout=1)[0] == 503)
        check(f"{name}: no client accepted before the app answers", refuses_connections(gw))
        if token:
            status = http("GET", f"http://127.0.0.1:{internal}/v1/connections/AAAAAAAAAAAAAAA=", timeout=2)[0]
            check(f"{name}: the internal API refuses a call without the token", status == 401, repr(status))
        app = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        check(f"{name}: ready once the app answers", wait_status(f"http://127.0.0.1:{internal}/readyz"))
        url = f"ws://127.0.0.1:{gw}/dev"
        ok, frames = asyncio.run(exchange(url, reply, pushed))
        check(f"{name}: the app's reply and its push through the internal API arrive", ok, repr(frames))
        seen = asyncio.run(whoami(url))
        check(f"{name}: the attribute set at connect comes back on a message", seen == "principal=- room=lobby", repr(seen))
        if name.startswith("python-flask"):
            got = asyncio.run(chat(url))
            check(f"{name}: the chat room: a join and a publish reach the member, not the other", got[0], repr(got[1]))
        code = asyncio.run(refused(url))
        check(f"{name}: the app refuses a handshake with its status", code == 403, repr(code))
    finally:
        if app is not None:
            stop(app)
        stop(dev)


def main():
    for example in EXAMPLES:
        run(*example)
        run(*example, token=TOKEN)
    TALLY.finish()


if __name__ == "__main__":
    main()
