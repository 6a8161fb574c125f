"""What ci/checks/check-resume.py runs against besides socketless: a TCP proxy it can cut, and
its upstream app (started as `check-resume.py --app PORT INTERNAL`). The app records every
`/connect` (connection id, session id, resumed, recovered, user agent, time) and every
`/disconnect`, and keeps the sessions that said `hello:LABEL` and the keep-alives each sent. On
the check's order it pushes numbered messages to a session, 100 a second, through serve's
`POST /v1/sessions/{id}/messages`, keeping every answer (number, status, time); pauses them;
closes the session's current connection with `DELETE /v1/connections/{id}`; and ends with `done`.
"""
import asyncio
import http.client
import json
import socket
import struct
import threading
import time
from http.server import ThreadingHTTPServer

from checklib import QuietHandler

RATE = 100


class Proxy:
    """Forwards 127.0.0.1:port (a free one, after `start`) to the target port; `abort` resets
    every connection through it on both sides."""

    def __init__(self, target):
        self.target, self.pairs, self.cuts = target, set(), 0

    async def start(self):
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def handle(self, r1, w1):
        try:
            r2, w2 = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            w1.close()
            return
        pair = (w1, w2)
        self.pairs.add(pair)

        async def pipe(r, w):
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                w.close()
        await asyncio.gather(pipe(r1, w2), pipe(r2, w1))
        self.pairs.discard(pair)

    def abort(self):
        """Resets both sides of every connection through the proxy."""
        for pair in list(self.pairs):
            for w in pair:
                rst(w.transport)
        self.pairs.clear()
        self.cuts += 1


def rst(transport):
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()


class State:
    def __init__(self, internal):
        self.internal = internal
        self.lock = threading.Lock()
        self.connects, self.disconnects = [], []
        self.current = {}      # session id -> its latest connection id
        self.hellos, self.keepalives = {}, {}
        self.pushes = {}       # session id -> [[seq, status, time]]
        self.paused = {}       # session id -> bool
        self.running = {}      # session id -> threading.Event set to stop

    def call(self, conn, method, path, body=b""):
        conn.request(method, path, body=body)
        r = conn.getresponse()
        r.read()
        return r.status

    def pump(self, sid, stop):
        conn = http.client.HTTPConnection("127.0.0.1", self.internal, timeout=10)
        seq, started = 0, time.time()
        while not stop.is_set():
            if self.paused.get(sid):
                time.sleep(0.01)
                started = time.time() - seq / RATE
                continue
            seq += 1
            try:
                status = self.call(conn, "POST", f"/v1/sessions/{sid}/messages", str(seq).encode())
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.internal, timeout=10)
                status = 0
            with self.lock:
                self.pushes.setdefault(sid, []).append([seq, status, time.time()])
            wait = started + seq / RATE - time.time()
            if wait > 0:
                time.sleep(wait)
        for _ in range(50):  # `done`, once the session takes it
            try:
                if self.call(conn, "POST", f"/v1/sessions/{sid}/messages", b"done") in (200, 202):
                    break
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.internal, timeout=10)
            time.sleep(0.1)
        conn.close()


def app_main(port, internal):
    state = State(internal)

    class Handler(QuietHandler):
        def do_GET(self):  # noqa: N802
            if self.path == "/state":
                with state.lock:
                    body = json.dumps({"connects": state.connects, "disconnects": state.disconnects,
                                       "hellos": state.hellos, "keepalives": state.keepalives,
                                       "pushes": state.pushes}).encode()
                return self.answer(200, body)
            self.answer(200)

        def do_POST(self):  # noqa: N802
            length = int(self.headers.get("content-length", 0))
            body = self.rfile.read(length) if length else b""
            h = self.headers
            cid, sid = h.get("x-socketless-connection-id", ""), h.get("x-socketless-session-id", "")
            if self.path == "/connect":
                with state.lock:
                    state.connects.append({"connection": cid, "session": sid, "at": time.time(),
                                           "resumed": h.get("x-socketless-resumed"),
                                           "recovered": h.get("x-socketless-recovered"),
                                           "agent": h.get("x-socketless-user-agent", "")})
                    state.current[sid] = cid
                return self.answer(200)
            if self.path == "/disconnect":
                with state.lock:
                    state.disconnects.append({"connection": cid, "session": sid, "at": time.time()})
                return self.answer(200)
            if self.path == "/message":
                text = body.decode(errors="replace")
                with state.lock:
                    if text.startswith("hello:"):
                        state.hellos[text[len("hello:"):]] = sid
                    elif text == "keepalive":
                        state.keepalives[sid] = state.keepalives.get(sid, 0) + 1
                return self.answer(200)
            order = json.loads(body or b"{}")
            sid = order.get("session", "")
            if self.path == "/pump":
                with state.lock:
                    if sid not in state.running:
                        state.running[sid] = threading.Event()
                        threading.Thread(target=state.pump, args=(sid, state.running[sid]), daemon=True).start()
                return self.answer(200)
            if self.path == "/pause":
                state.paused[sid] = bool(order.get("paused"))
                return self.answer(200)
            if self.path == "/kick":
                with state.lock:
                    cid = state.current.get(sid, "")
                conn = http.client.HTTPConnection("127.0.0.1", internal, timeout=10)
                try:
                    status = state.call(conn, "DELETE", f"/v1/connections/{cid}")
                finally:
                    conn.close()
                return self.answer(200, str(status).encode())
            if self.path == "/finish":
                with state.lock:
                    stop = state.running.get(sid)
                if stop:
                    stop.set()
                return self.answer(200)
            self.answer(404)

    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
