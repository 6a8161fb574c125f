"""A Lambda REQUEST authorizer for the WebSocket API's $connect route, in Python with the
standard library only.

As a Lambda function, `authorizer.handler` reads the client's `?token=` from
`event["queryStringParameters"]` and returns the IAM policy output API Gateway expects: the
principal (the token's user), `execute-api:Invoke` allowed on `event["methodArn"]` for a known
token and denied for an unknown one, and a `context` of string values (user, tenant) that API
Gateway exposes as `context.authorizer.*`. A missing token raises `Unauthorized`, which API
Gateway answers with 401 (it does not even call the function when the identity source is
missing).

Run as a program, it serves the one endpoint of the AWS Lambda Runtime Interface Emulator,
`POST /2015-03-31/functions/function/invocations` (the event JSON in, the handler's JSON out;
an exception gives 200 with `{"errorMessage": ..., "errorType": ...}`), so a local gateway can
call it like Lambda:

    python3 authorizer.py            # listens on 127.0.0.1:9000

Environment:
    HOST, PORT              where it listens (default 127.0.0.1 and 9000)
    AUTHORIZER_TOKENS       JSON {"token": {"user": ..., "tenant": ...}, ...}; wins over the file
    AUTHORIZER_TOKENS_FILE  the same JSON in a file (default: ../tokens.json, the sample tokens)
"""
import hmac
import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

INVOCATIONS = "/2015-03-31/functions/function/invocations"
MAX_EVENT = 6 * 1024 * 1024  # Lambda's synchronous payload limit
DEFAULT_TOKENS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tokens.json")


class Unauthorized(Exception):
    """No token: API Gateway answers the handshake with 401."""

    def __init__(self):
        super().__init__("Unauthorized")


def load_tokens(environ=None):
    """token -> {"user": ..., "tenant": ...}, from AUTHORIZER_TOKENS or AUTHORIZER_TOKENS_FILE."""
    environ = os.environ if environ is None else environ
    text = environ.get("AUTHORIZER_TOKENS")
    if text is None:
        with open(environ.get("AUTHORIZER_TOKENS_FILE", DEFAULT_TOKENS_FILE), encoding="utf-8") as f:
            text = f.read()
    tokens = json.loads(text)
    for token, who in tokens.items():
        if not token or not isinstance(who, dict) or not isinstance(who.get("user"), str) or not who["user"]:
            raise ValueError(f"token entry {token[:4]!r}...: needs a non-empty token and a user")
    return tokens


def find(tokens, token):
    """The entry for `token`, comparing in constant time against every known token."""
    found = None
    given = token.encode()
    for known, who in tokens.items():
        if hmac.compare_digest(known.encode(), given):
            found = who
    return found


def policy(principal_id, effect, method_arn, context):
    return {
        "principalId": principal_id,
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": effect, "Resource": method_arn}],
        },
        # API Gateway takes strings, numbers and booleans here, never objects or arrays.
        "context": {k: str(v) for k, v in context.items()},
    }


_loaded = None


def handler(event, context=None, tokens=None):
    """The Lambda handler (the third argument is for tests; Lambda passes two). The tokens are
    read once per process."""
    global _loaded
    if tokens is None:
        _loaded = _loaded if _loaded is not None else load_tokens()
        tokens = _loaded
    token = (event.get("queryStringParameters") or {}).get("token")
    if not token:
        raise Unauthorized()
    who = find(tokens, token)
    if who is None:
        return policy("anonymous", "Deny", event["methodArn"], {})
    return policy(who["user"], "Allow", event["methodArn"], {"user": who["user"], "tenant": who.get("tenant", "")})


def invoke(body, tokens):
    """One invocation as the emulator answers it: the result, or the error as JSON."""
    try:
        event = json.loads(body)
    except ValueError as e:
        return {"errorMessage": f"Unable to unmarshal input: {e}", "errorType": "Runtime.UnmarshalError"}, True
    try:
        return handler(event, None, tokens), False
    except Exception as e:  # noqa: BLE001 - every error becomes the emulator's error answer
        return {"errorMessage": str(e), "errorType": type(e).__name__}, True


def make_server(host, port, tokens):
    class Invocations(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive; every answer has a Content-Length

        def _send(self, status, obj, function_error=False):
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if function_error:
                self.send_header("X-Amz-Function-Error", "Unhandled")  # as Lambda's Invoke API
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0:
                self.close_connection = True
                return self._send(400, {"message": "bad Content-Length"})
            if length > MAX_EVENT:
                self.close_connection = True  # the body stays unread
                return self._send(413, {"message": "event too large"})
            body = self.rfile.read(length)
            if self.path.split("?", 1)[0] != INVOCATIONS:
                return self._send(404, {"message": "not found"})
            result, failed = invoke(body, tokens)
            self._send(200, result, failed)

        def do_GET(self):
            if self.path.split("?", 1)[0] == INVOCATIONS:
                return self._send(405, {"message": "use POST"})
            self._send(404, {"message": "not found"})

        def log_message(self, fmt, *args):
            # The request line only; the event (with its token) is never logged.
            sys.stderr.write(f"{self.address_string()} {fmt % args}\n")

    return ThreadingHTTPServer((host, port), Invocations)


def _stop(signum, frame):
    raise KeyboardInterrupt  # SIGTERM stops the server as Ctrl-C does


def main():
    tokens = load_tokens()
    server = make_server(os.environ.get("HOST", "127.0.0.1"), int(os.environ.get("PORT", "9000")), tokens)
    host, port = server.server_address[:2]
    print(f"authorizer: http://{host}:{port}{INVOCATIONS} ({len(tokens)} tokens)", flush=True)
    signal.signal(signal.SIGTERM, _stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
