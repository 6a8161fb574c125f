#!/usr/bin/env python3
"""boto3's apigatewaymanagementapi client against `socketless gateway`'s @connections API.

It starts a tiny backend (records the connection id from $connect, echoes messages), starts the
gateway binary with SigV4 verification on, connects a WebSocket client (standard library only),
and checks PostToConnection, GetConnection, DeleteConnection, GoneException after the close, and
ForbiddenException for a wrong secret. Needs boto3 (ci/requirements.txt).

usage: check-boto3.py PATH_TO_SOCKETLESS_BINARY
"""
import base64
import http.server
import os
import socket
import struct
import subprocess
import sys
import threading

import boto3
from botocore.exceptions import ClientError

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from checklib import Tally, free_port, wait_port  # noqa: E402

KEY, SECRET = "AKIDBOTO3CHECK", "boto3-check-secret"
connect_ids = []


class Backend(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.path == "/connect":
            connect_ids.append(self.headers["x-socketless-connection-id"])
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class WebSocket:
    """The smallest client that does what this check needs: handshake, read text and close."""

    def __init__(self, port, path):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nUser-Agent: boto3-check\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise RuntimeError("handshake: connection closed")
            head += chunk
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"handshake refused: {head!r}")

    def _exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise RuntimeError("connection closed")
            buf += chunk
        return buf

    def read(self):
        """Returns (opcode, payload)."""
        b1, b2 = self._exact(2)
        length = b2 & 0x7F
        if length == 126:
            length = struct.unpack(">H", self._exact(2))[0]
        elif length == 127:
            length = struct.unpack(">Q", self._exact(8))[0]
        return b1 & 0x0F, self._exact(length)


TALLY = Tally("boto3")


def check(name, cond, detail=""):
    """Each step needs the one before it: the first failure ends the run, with the tally."""
    if not TALLY.check(name, cond, detail):
        TALLY.finish()


def main():
    binary = sys.argv[1]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Backend)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = free_port()
    gw = subprocess.Popen(
        [binary, "gateway", "--listen", f"127.0.0.1:{port}",
         "--param", f"IntegrationUri=http://127.0.0.1:{server.server_address[1]}",
         "--param", "SharedSecret=boto3-check-shared-secret", "--param", "StageName=dev",
         "--sigv4-access-key-id", KEY, "--sigv4-secret-access-key", SECRET, "--shutdown-delay", "0s"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        if not wait_port(port, 20, gw):
            sys.exit("FAILED: the gateway did not start")
        ws = WebSocket(port, "/dev")
        check("connected; $connect saw the connection id", len(connect_ids) == 1)
        cid = connect_ids[0]
        endpoint = f"http://127.0.0.1:{port}/dev"
        client = boto3.client("apigatewaymanagementapi", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id=KEY, aws_secret_access_key=SECRET)

        client.post_to_connection(ConnectionId=cid, Data=b"from boto3")
        op, payload = ws.read()
        check("post_to_connection delivered a text frame", (op, payload) == (1, b"from boto3"), repr(payload))

        info = client.get_connection(ConnectionId=cid)
        check("get_connection parses connectedAt/lastActiveAt as datetimes",
              hasattr(info["ConnectedAt"], "year") and hasattr(info["LastActiveAt"], "year"))
        check("get_connection identity", info["Identity"] == {"SourceIp": "127.0.0.1", "UserAgent": "boto3-check"},
              repr(info["Identity"]))

        client.delete_connection(ConnectionId=cid)
        op, payload = ws.read()
        check("delete_connection closes with 1000", op == 8 and struct.unpack(">H", payload[:2])[0] == 1000)

        try:
            client.post_to_connection(ConnectionId=cid, Data=b"late")
            check("GoneException after the close", False)
        except ClientError as e:
            check("GoneException after the close", e.response["Error"]["Code"] == "GoneException", repr(e.response))
            check("410 status", e.response["ResponseMetadata"]["HTTPStatusCode"] == 410)

        forged = boto3.client("apigatewaymanagementapi", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id=KEY, aws_secret_access_key="wrong")
        try:
            forged.get_connection(ConnectionId=cid)
            check("ForbiddenException for a wrong secret", False)
        except ClientError as e:
            check("ForbiddenException for a wrong secret", e.response["Error"]["Code"] == "ForbiddenException",
                  repr(e.response))
        TALLY.finish()
    finally:
        gw.terminate()
        gw.wait(timeout=10)
        server.shutdown()


if __name__ == "__main__":
    main()
