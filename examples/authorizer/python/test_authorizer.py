"""Tests of the Python authorizer: the policy it returns for a known, an unknown and a missing
token on the sample WebSocket $connect event (../fixtures/connect-event.json), where its tokens
come from, and its emulator endpoint over real HTTP on 127.0.0.1.

    python3 -m unittest test_authorizer.py      (from this folder)
"""
import copy
import http.client
import json
import os
import tempfile
import threading
import unittest

import authorizer

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "..", "fixtures", "connect-event.json"), encoding="utf-8") as f:
    EVENT = json.load(f)
TOKENS = {"tok-alice-0123": {"user": "alice", "tenant": "acme"}, "tok-bob-4567": {"user": "bob", "tenant": "globex"}}


def event_with(token):
    e = copy.deepcopy(EVENT)
    if token is None:
        e["queryStringParameters"] = None  # what API Gateway sends without a query string
        e["multiValueQueryStringParameters"] = None
    else:
        e["queryStringParameters"] = {"token": token}
        e["multiValueQueryStringParameters"] = {"token": [token]}
    return e


class Fixture(unittest.TestCase):
    def test_the_sample_is_a_websocket_connect_request_event(self):
        self.assertEqual(EVENT["type"], "REQUEST")
        self.assertTrue(EVENT["methodArn"].startswith("arn:aws:execute-api:"))
        self.assertTrue(EVENT["methodArn"].endswith("/dev/$connect"))
        rc = EVENT["requestContext"]
        self.assertEqual((rc["routeKey"], rc["eventType"], rc["stage"]), ("$connect", "CONNECT", "dev"))
        for key in ("connectionId", "domainName", "apiId"):
            self.assertTrue(rc[key], key)
        self.assertEqual(EVENT["headers"]["Upgrade"], "websocket")
        self.assertEqual(EVENT["multiValueHeaders"]["Upgrade"], ["websocket"])
        self.assertIn("token", EVENT["queryStringParameters"])
        self.assertEqual(EVENT["stageVariables"], {})


class Handler(unittest.TestCase):
    def test_a_known_token_is_allowed_on_the_method_arn(self):
        out = authorizer.handler(event_with("tok-alice-0123"), None, TOKENS)
        self.assertEqual(out, {
            "principalId": "alice",
            "policyDocument": {"Version": "2012-10-17", "Statement": [
                {"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": EVENT["methodArn"]}]},
            "context": {"user": "alice", "tenant": "acme"},
        })

    def test_context_values_are_strings(self):
        out = authorizer.handler(event_with("n"), None, {"n": {"user": "carol", "tenant": 42}})
        self.assertEqual(out["context"], {"user": "carol", "tenant": "42"})

    def test_an_unknown_token_is_denied(self):
        out = authorizer.handler(event_with("tok-alice-0124"), None, TOKENS)
        self.assertEqual(out["policyDocument"]["Statement"],
                         [{"Action": "execute-api:Invoke", "Effect": "Deny", "Resource": EVENT["methodArn"]}])
        self.assertEqual(out["principalId"], "anonymous")
        self.assertEqual(out["context"], {})

    def test_a_missing_or_empty_token_raises_unauthorized(self):
        for e in (event_with(None), event_with(""), {**event_with(None), "queryStringParameters": {"other": "x"}}):
            with self.assertRaises(authorizer.Unauthorized) as caught:
                authorizer.handler(e, None, TOKENS)
            self.assertEqual(str(caught.exception), "Unauthorized")


class Tokens(unittest.TestCase):
    def test_the_variable_wins_over_the_file(self):
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump({"from-file": {"user": "f"}}, f)
        try:
            self.assertEqual(authorizer.load_tokens({"AUTHORIZER_TOKENS_FILE": f.name}), {"from-file": {"user": "f"}})
            both = {"AUTHORIZER_TOKENS_FILE": f.name, "AUTHORIZER_TOKENS": '{"from-env": {"user": "e"}}'}
            self.assertEqual(authorizer.load_tokens(both), {"from-env": {"user": "e"}})
        finally:
            os.unlink(f.name)

    def test_the_sample_tokens_file_is_the_default(self):
        tokens = authorizer.load_tokens({})
        self.assertEqual(tokens[EVENT["queryStringParameters"]["token"]]["user"], "alice")

    def test_an_entry_without_a_user_is_refused(self):
        with self.assertRaises(ValueError):
            authorizer.load_tokens({"AUTHORIZER_TOKENS": '{"t": {"tenant": "x"}}'})


class Endpoint(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = authorizer.make_server("127.0.0.1", 0, TOKENS)
        cls.port = cls.server.server_address[1]
        cls.thread = threading.Thread(target=cls.server.serve_forever, daemon=True)
        cls.thread.start()

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()
        cls.server.server_close()
        cls.thread.join(timeout=5)

    def call(self, method, path, body=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            return resp.status, resp.getheader("X-Amz-Function-Error"), json.loads(resp.read())
        finally:
            conn.close()

    def test_an_invocation_returns_the_handlers_result(self):
        e = event_with("tok-bob-4567")
        status, function_error, out = self.call("POST", authorizer.INVOCATIONS, json.dumps(e))
        self.assertEqual((status, function_error), (200, None))
        self.assertEqual(out, authorizer.handler(e, None, TOKENS))
        self.assertEqual(out["principalId"], "bob")

    def test_an_exception_is_200_with_the_error_message(self):
        status, function_error, out = self.call("POST", authorizer.INVOCATIONS, json.dumps(event_with(None)))
        self.assertEqual((status, function_error), (200, "Unhandled"))
        self.assertEqual(out, {"errorMessage": "Unauthorized", "errorType": "Unauthorized"})

    def test_an_event_that_is_not_json_is_an_error_answer(self):
        status, function_error, out = self.call("POST", authorizer.INVOCATIONS, b"{not json")
        self.assertEqual((status, function_error), (200, "Unhandled"))
        self.assertEqual(out["errorType"], "Runtime.UnmarshalError")

    def test_only_the_invocation_endpoint_exists(self):
        self.assertEqual(self.call("POST", "/2015-03-31/functions/other/invocations", b"{}")[0], 404)
        self.assertEqual(self.call("GET", authorizer.INVOCATIONS)[0], 405)


if __name__ == "__main__":
    unittest.main()
