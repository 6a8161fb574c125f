#!/usr/bin/env python3
"""Tests the chart's dashboard and alerts against the real binary. Renders the dashboard
ConfigMap and the PrometheusRule with a real Helm (helm-python-sdk) and checks their shape
(kubernetes-validate --strict for the ConfigMap; the PrometheusRule, a CRD, against the
Prometheus Operator's rule fields); runs `promtool check rules` and `promtool test rules` with the
unit tests in ci/fixtures/promtool/ (each alert fires on the series that should fire it and stays
silent on healthy ones), and shows a test failing when the rules cannot fire. Then starts moto,
`socketless serve` (DynamoDB, an upstream app) and two `socketless gateway`s, drives traffic that
succeeds and traffic that fails (a connection limit, a dead backend, an app answering 500,
DynamoDB stopped), scrapes their /metrics, and fails, naming them, on any metric in the
dashboard's queries, the alerts or the promtool fixtures that the binary does not export, and on
any fixture label the binary does not put on that metric. Usage: check-observability.py BINARY
Prints `observability: N passed, N failed`.
"""
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import helm_python
import kubernetes_validate
import yaml
from helm_python import Chart
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from checklib import Tally, free_port, http, stop, wait_port, wait_status  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHART_DIR = os.path.join(ROOT, "chart", "socketless")
FIXTURES = os.path.join(ROOT, "ci", "fixtures", "promtool")
DASHBOARD = os.path.join(CHART_DIR, "dashboards", "socketless.json")
KUBE = "1.33.0"
NAMESPACE = "prod"
MONITORING = ["monitoring.coreos.com/v1", "monitoring.coreos.com/v1/PrometheusRule",
              "monitoring.coreos.com/v1/ServiceMonitor"]
BASE = {"config": {"region": "us-east-1"}, "sharedSecret": {"value": "observability-secret-0123"}}
TALLY = Tally("observability")
check = TALLY.check

# Metrics the queries use that other exporters provide, not the binary.
EXTERNAL = {
    "up": "Prometheus, for every scrape target",
    "kube_pod_status_ready": "kube-state-metrics",
    "kube_pod_deletion_timestamp": "kube-state-metrics",
}
# Labels Prometheus adds to every scraped series (target labels), which no /metrics shows.
TARGET_LABELS = {"namespace", "pod", "job", "instance", "service", "endpoint", "container"}
# Label values the source emits that the recording run below does not provoke; everything else a
# fixture uses must have been seen in a real scrape.
UNRECORDED = {
    # src/backend/push.rs PushOutcome::label: 5xx or no answer, 403, 429.
    ("socketless_pushes_total", "outcome"): {"failed", "forbidden", "throttled", "too_large"},
    # src/store/dynamo.rs: with DynamoDB stopped the run below sees a timeout (past --aws-timeout)
    # or an error, depending on how the connection fails; both are emitted.
    ("socketless_dynamodb_calls_total", "outcome"): {"timeout", "error"},
    # src/backend/upstream.rs: the app did not answer in time, or could not be reached.
    ("socketless_upstream_calls_total", "outcome"): {"timeout", "unreachable"},
}


def merge(base, extra):
    out = copy.deepcopy(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


chart = Chart.load(CHART_DIR)


def render(values, apis=MONITORING):
    opts = {"name": "rel", "namespace": NAMESPACE, "kube_version": "v" + KUBE, "api_versions": list(apis)}
    out = json.loads(helm_python._native.call_string("helm_render", chart._raw(), json.dumps(merge(BASE, values)),
                                                      json.dumps(opts)))
    return {path: [d for d in yaml.safe_load_all(text) if d] for path, text in out.items()
            if not path.endswith("NOTES.txt") and text.strip()}


def render_error(values, apis=MONITORING):
    try:
        render(values, apis)
        return None
    except helm_python.HelmError as e:
        return str(e)


def of_kind(rendered, kind):
    return [d for docs in rendered.values() for d in docs if d.get("kind") == kind]


# ---------------------------------------------------------------------------------------------
# PromQL: the metric names an expression reads.

KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
            "offset", "inf", "nan"}


def metric_names(expr):
    """Names of the series an expression selects (functions and aggregations excluded)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)          # strings
    e = re.sub(r"\$\{\w+\}|\$\w+", "", e)                   # Grafana variables
    e = re.sub(r"\{[^}]*\}", "", e)                           # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)                          # ranges
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    names = set()
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?", e):
        if m.group(2) or m.group(1).lower() in KEYWORDS:
            continue
        names.add(m.group(1))
    return names


def dashboard_exprs(dash):
    out = []
    for p in dash.get("panels", []):
        for t in p.get("targets", []):
            out.append((p["title"], t["expr"]))
        for sub in p.get("panels", []):
            for t in sub.get("targets", []):
                out.append((sub["title"], t["expr"]))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            m = re.match(r"label_values\((.*),\s*\w+\)$", q)
            out.append((f"variable {v['name']}", m.group(1) if m else q))
    return out


# ---------------------------------------------------------------------------------------------
# Real /metrics: moto, serve with an upstream app, and two gateways, after traffic.

class App(BaseHTTPRequestHandler):
    """The upstream app: accepts connects, echoes messages, answers 500 to a message "fail"."""

    def do_GET(self):
        self.answer(200, b"ok")

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        self.answer(500 if body == b"fail" else 200, body if self.path == "/message" else b"")

    def answer(self, status, body):
        self.send_response(status)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def parse_metrics(text):
    """{sample name: [label dicts]} from Prometheus/OpenMetrics text."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s", line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        out.setdefault(m.group(1), []).append(labels)
    return out


def try_ws(url, messages=(), hold=None):
    """Opens a WebSocket (kept open when `hold` is a list), sends `messages`, reads what comes
    back within a second each; the handshake's refusal status, or 101."""
    try:
        ws = connect(url, open_timeout=10, close_timeout=2)
    except InvalidStatus as e:
        return e.response.status_code
    for m in messages:
        ws.send(m)
        try:
            ws.recv(timeout=2)
        except TimeoutError:
            pass
    if hold is None:
        ws.close()
    else:
        hold.append(ws)
    return 101


def record(binary, logs):
    """Runs the processes, drives traffic, returns (serve's /metrics, the gateways' /metrics)."""
    procs = []
    app = ThreadingHTTPServer(("127.0.0.1", 0), App)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_REGION="us-east-1",
               AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null")
    env.pop("AWS_PROFILE", None)
    secret = "observability-secret-0123"
    stage = "obs"

    def start(name, args, port):
        log = open(os.path.join(logs, name + ".log"), "w")
        p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        procs.append(p)
        if not wait_port(port, 20, p):
            with open(log.name) as f:
                sys.exit(f"{name} did not start:\n{f.read()[-3000:]}")
        return p

    try:
        moto_port, backend, internal, gw, dead_gw = (free_port() for _ in range(5))
        moto = start("moto", ["moto_server", "-H", "127.0.0.1", "-p", str(moto_port)], moto_port)
        start("serve", [binary, "serve", "--listen", f"127.0.0.1:{backend}", "--internal-listen", f"127.0.0.1:{internal}",
                        "--store", "dynamodb", "--dynamodb-endpoint", f"http://127.0.0.1:{moto_port}", "--create-table",
                        "--table", "obs-sessions", "--region", "us-east-1", "--shared-secret", secret,
                        "--push-endpoint", f"http://127.0.0.1:{gw}/{stage}", "--aws-timeout", "2s",
                        "--upstream", f"http://127.0.0.1:{app.server_address[1]}", "--shutdown-delay", "0s"], backend)
        if not wait_status(f"http://127.0.0.1:{internal}/readyz", 200, 30):
            sys.exit("serve never turned ready")
        gateway = [binary, "gateway", "--param", f"SharedSecret={secret}", "--param", f"StageName={stage}",
                   "--integration-timeout", "5s", "--shutdown-delay", "0s"]
        start("gateway", gateway + ["--listen", f"127.0.0.1:{gw}", "--param", f"IntegrationUri=http://127.0.0.1:{backend}",
                                    "--max-connections", "2"], gw)
        # A gateway whose backend is not there: every $connect fails.
        start("gateway-dead-backend", gateway + ["--listen", f"127.0.0.1:{dead_gw}", "--param",
                                                 f"IntegrationUri=http://127.0.0.1:{free_port()}"], dead_gw)
        url = f"ws://127.0.0.1:{gw}/{stage}"
        held = []
        statuses = [try_ws(url, ["hello", "again", "fail"], held), try_ws(url, ["hi"], held)]
        statuses.append(try_ws(url))                       # the third: 429 at --max-connections 2
        statuses.append(try_ws(f"ws://127.0.0.1:{dead_gw}/{stage}"))
        # Pushes through serve's internal API: to the held connections, and to an unknown id.
        for status in [http("POST", f"http://127.0.0.1:{internal}/v1/broadcast", b"to everyone")[0],
                       http("POST", f"http://127.0.0.1:{internal}/v1/connections/bm90LWEtY29ubmVjdGlvbg=/messages",
                            b"nobody")[0]]:
            statuses.append(status)
        for ws in held:
            ws.close()
        time.sleep(0.5)
        # DynamoDB gone: the next handshake's session cannot be written.
        stop(moto)
        statuses.append(try_ws(url))
        print(f"recording run: handshake and API statuses {statuses}")
        serve_text = http("GET", f"http://127.0.0.1:{internal}/metrics")[1]
        gateway_text = http("GET", f"http://127.0.0.1:{gw}/metrics")[1] + "\n" + \
            http("GET", f"http://127.0.0.1:{dead_gw}/metrics")[1]
        return serve_text, gateway_text
    finally:
        for p in reversed(procs):
            stop(p)
        app.shutdown()


if __name__ == "__main__" and len(sys.argv) > 2 and sys.argv[2] == "--record-only":
    d = tempfile.mkdtemp()
    s, g = record(sys.argv[1], d)
    print(s)
    print(g)
    sys.exit(0)
