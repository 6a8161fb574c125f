#!/usr/bin/env python3
"""Tests the chart's dashboard and alerts against the real binary. Renders the dashboard
ConfigMap, the PrometheusRule and the gateway's PodMonitor with a real Helm (helm-python-sdk) and
checks their shape (kubernetes-validate --strict for the ConfigMap; the Prometheus Operator's
kinds, CRDs without a schema here, field by field); runs `promtool check rules` and
`promtool test rules` with the unit tests in ci/fixtures/promtool/ (each alert fires on the
series that should fire it and stays silent on healthy ones), and shows the tests failing when
the rules cannot fire. Then starts moto, two `socketless serve` on one table (one with an
upstream app) and two `socketless gateway`s, drives healthy traffic and scrapes /metrics, then
failing traffic (an app answering 500, a connection limit, a dead backend, DynamoDB stopped) and
scrapes again. It fails, naming them, on any metric in the dashboard's queries, the alerts or the
promtool fixtures that the binary does not export, and on any fixture label or label value the
binary does not put on that metric; and it runs `promtool test rules` on the recorded series
themselves: nothing fires on the healthy snapshot, exactly the provoked alerts on the failing one.
Usage: check-observability.py BINARY
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
from urllib.parse import quote
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import helm_python
import kubernetes_validate
import yaml
from helm_python import Chart
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from checklib import Tally, free_port, http, moto_command, stop, wait_port, wait_status  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHART_DIR = os.path.join(ROOT, "chart", "socketless")
FIXTURES = os.path.join(ROOT, "ci", "fixtures", "promtool")
DASHBOARD = os.path.join(CHART_DIR, "dashboards", "socketless.json")
KUBE = "1.33.0"
NAMESPACE = "prod"
MONITORING = ["monitoring.coreos.com/v1", "monitoring.coreos.com/v1/PrometheusRule",
              "monitoring.coreos.com/v1/ServiceMonitor", "monitoring.coreos.com/v1/PodMonitor"]
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
    """The upstream app: accepts connects (refuses them with 403 once `refuse` is set), echoes
    messages, answers 500 to a message "fail"; keeps the connection ids it saw."""
    refuse = False
    ids = []

    def do_GET(self):
        self.answer(200, b"ok")

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.path == "/connect":
            App.ids.append(self.headers.get("x-socketless-connection-id"))
            self.answer(403 if App.refuse else 200, b"")
        else:
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


# The pods the recorded processes stand for, with the target labels Prometheus would add when
# scraping them through the chart's ServiceMonitor (serve) and PodMonitor (gateway).
SERVE_JOB = "rel-socketless-internal"
GATEWAY_JOB = f"{NAMESPACE}/rel-socketless-gateway"
PODS = {
    "serve": {"pod": "rel-socketless-7d9f8c6b5-x2k8q", "job": SERVE_JOB},
    "serve-b": {"pod": "rel-socketless-7d9f8c6b5-w9d4z", "job": SERVE_JOB},
    "gateway": {"pod": "rel-socketless-gateway-0", "job": GATEWAY_JOB},
    "gateway-dead-backend": {"pod": "rel-socketless-gateway-1", "job": GATEWAY_JOB},
}


def record(binary, logs):
    """Runs the processes and drives traffic in two phases. Returns two snapshots,
    {process: its /metrics text}: after healthy traffic only (clients come, talk and go, a push
    finds its client gone, a second serve's create finds the session there, the app refuses a
    client), and after failing traffic too (the app answers 500, a third client at
    --max-connections 2, a gateway with no backend, DynamoDB stopped)."""
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
        moto_port, backend, internal, gw, dead_gw, backend_b, internal_b = (free_port() for _ in range(7))
        metrics_urls = {"serve": f"http://127.0.0.1:{internal}/metrics",
                        "serve-b": f"http://127.0.0.1:{internal_b}/metrics",
                        "gateway": f"http://127.0.0.1:{gw}/metrics",
                        "gateway-dead-backend": f"http://127.0.0.1:{dead_gw}/metrics"}
        moto = start("moto", moto_command(moto_port), moto_port)
        start("serve", [binary, "serve", "--listen", f"127.0.0.1:{backend}", "--internal-listen", f"127.0.0.1:{internal}",
                        "--store", "dynamodb", "--dynamodb-endpoint", f"http://127.0.0.1:{moto_port}", "--create-table",
                        "--table", "obs-sessions", "--region", "us-east-1", "--shared-secret", secret,
                        "--push-endpoint", f"http://127.0.0.1:{gw}/{stage}", "--aws-timeout", "2s",
                        "--upstream", f"http://127.0.0.1:{app.server_address[1]}", "--shutdown-delay", "0s"], backend)
        if not wait_status(f"http://127.0.0.1:{internal}/readyz", 200, 30):
            sys.exit("serve never turned ready")
        # A second serve on the same table, which has none of the sessions in its cache.
        start("serve-b", [binary, "serve", "--listen", f"127.0.0.1:{backend_b}", "--internal-listen",
                          f"127.0.0.1:{internal_b}", "--store", "dynamodb", "--dynamodb-endpoint",
                          f"http://127.0.0.1:{moto_port}", "--table", "obs-sessions", "--region", "us-east-1",
                          "--shared-secret", secret, "--push-endpoint", f"http://127.0.0.1:{gw}/{stage}",
                          "--shutdown-delay", "0s"], backend_b)
        gateway = [binary, "gateway", "--param", f"SharedSecret={secret}", "--param", f"StageName={stage}",
                   "--integration-timeout", "5s", "--shutdown-delay", "0s"]
        start("gateway", gateway + ["--listen", f"127.0.0.1:{gw}", "--param", f"IntegrationUri=http://127.0.0.1:{backend}",
                                    "--max-connections", "2"], gw)
        # A gateway whose backend is not there: every $connect fails.
        start("gateway-dead-backend", gateway + ["--listen", f"127.0.0.1:{dead_gw}", "--param",
                                                 f"IntegrationUri=http://127.0.0.1:{free_port()}"], dead_gw)

        def snapshot():
            return {name: http("GET", url)[1] for name, url in metrics_urls.items()}

        url = f"ws://127.0.0.1:{gw}/{stage}"
        held = []
        # Healthy traffic.
        statuses = [try_ws(url, ["hello", "again"], held), try_ws(url, ["hi"], held)]
        # Pushes through serve's internal API: to the held connections (a broadcast, which goes
        # as one batch `deliver` to a socketless gateway, and one PostToConnection to a held
        # connection), and to an unknown id (410).
        statuses.append(http("POST", f"http://127.0.0.1:{internal}/v1/broadcast", b"to everyone")[0])
        statuses.append(http("POST", f"http://127.0.0.1:{internal}/v1/connections/{quote(App.ids[0], safe='')}/messages",
                             b"to one")[0])
        statuses.append(http("POST", f"http://127.0.0.1:{internal}/v1/connections/bm90LWEtY29ubmVjdGlvbg=/messages",
                             b"nobody")[0])
        # A message, and a repeated $connect, for a live session reaching the serve that has not
        # seen it: the create is a conditional write that finds the session there.
        for route, event in (("message", "MESSAGE"), ("connect", "CONNECT")):
            statuses.append(http("POST", f"http://127.0.0.1:{backend_b}/{route}", b"elsewhere", {
                "x-socketless-connection-id": App.ids[0], "x-socketless-secret": secret,
                "x-socketless-event-type": event})[0])
        for ws in held:
            ws.close()
        held.clear()
        time.sleep(0.5)
        App.refuse = True                                 # the app turns a client away (403)
        statuses.append(try_ws(url))
        App.refuse = False
        healthy = snapshot()
        # Failing traffic.
        statuses.append(try_ws(url, ["fail"], held))      # the app answers 500
        statuses.append(try_ws(url, [], held))
        statuses.append(try_ws(url))                       # the third: 429 at --max-connections 2
        statuses.append(try_ws(f"ws://127.0.0.1:{dead_gw}/{stage}"))
        for ws in held:
            ws.close()
        time.sleep(0.5)
        stop(moto)                                         # DynamoDB gone: no session can be written
        statuses.append(try_ws(url))
        print(f"recording run: handshake and API statuses {statuses}")
        return healthy, snapshot()
    finally:
        for p in reversed(procs):
            stop(p)
        app.shutdown()


def recorded_series(snap):
    """promtool input series from one snapshot: every sample with its pod's target labels, a
    counter growing by its recorded value every minute (the run repeated each minute), a gauge
    holding its value."""
    out = []
    for proc, text in snap.items():
        for line in text.splitlines():
            m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)", line)
            if not m or line.startswith("#"):
                continue
            name, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
            target = dict(PODS[proc], namespace=NAMESPACE)
            all_labels = ",".join([labels] * bool(labels) + [f'{k}="{v}"' for k, v in sorted(target.items())])
            counter = name.endswith(("_total", "_bucket", "_sum", "_count"))
            out.append({"series": f"{name}{{{all_labels}}}",
                        "values": f"0+{value!r}x20" if counter else f"{value!r}x20"})
    return out


# The socketless_* alerts and what the failing phase of the recording run must fire.
RECORDED_ALERTS = ["SocketlessGatewayIntegrationErrors", "SocketlessBackendErrors", "SocketlessPushFailures",
                   "SocketlessConnectionLimit", "SocketlessDynamoDBErrors", "SocketlessUpstreamErrors"]


def expected_failing(failing):
    """The alerts the failing phase must fire, label by label. The DynamoDB outage shows as a
    timeout or an error depending on how the connection fails: the recorded outcome is expected."""
    dynamo = sorted({(ls["operation"], ls["outcome"]) for ls in
                     parse_metrics(failing["serve"]).get("socketless_dynamodb_calls_total", [])
                     if ls["outcome"] in ("timeout", "error")})
    return {
        "SocketlessGatewayIntegrationErrors": [{"severity": "warning", "namespace": NAMESPACE, "route": r}
                                               for r in ("$connect", "$default")],
        "SocketlessBackendErrors": [{"severity": "warning", "namespace": NAMESPACE, "route": r}
                                    for r in ("/connect", "/message")],
        "SocketlessPushFailures": [],
        "SocketlessConnectionLimit": [{"severity": "warning", "namespace": NAMESPACE,
                                       "pod": PODS["gateway"]["pod"]}],
        "SocketlessDynamoDBErrors": [{"severity": "critical", "namespace": NAMESPACE, "operation": o, "outcome": c}
                                     for o, c in dynamo],
        "SocketlessUpstreamErrors": [{"severity": "warning", "namespace": NAMESPACE, "event": "message"}],
    }


def check_recorded(rule, healthy, failing, work):
    """promtool test rules on the recorded series themselves: nothing fires on the healthy
    phase; on the failing one exactly the alerts it provoked fire (annotations, tested by the
    fixtures, are left out here)."""
    rdir = os.path.join(work, "recorded")
    os.makedirs(rdir)
    groups = copy.deepcopy(rule["spec"]["groups"])
    for g in groups:
        for r in g["rules"]:
            r.pop("annotations", None)
    with open(os.path.join(rdir, "rules.yaml"), "w") as f:
        yaml.safe_dump({"groups": groups}, f, sort_keys=False)
    expected = expected_failing(failing)
    check("the DynamoDB outage was recorded (a PutItem timeout or error)", bool(expected["SocketlessDynamoDBErrors"]))
    tests = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": [
        {"name": "recorded healthy traffic", "interval": "1m", "input_series": recorded_series(healthy),
         "alert_rule_test": [{"eval_time": "15m", "alertname": a, "exp_alerts": []} for a in RECORDED_ALERTS]},
        {"name": "recorded failing traffic", "interval": "1m", "input_series": recorded_series(failing),
         "alert_rule_test": [{"eval_time": "15m", "alertname": a, "exp_alerts": [{"exp_labels": l} for l in ls]}
                             for a, ls in expected.items()]},
    ]}
    with open(os.path.join(rdir, "recorded.test.yaml"), "w") as f:
        yaml.safe_dump(tests, f, sort_keys=False)
    n = len(tests["tests"][0]["input_series"]), len(tests["tests"][1]["input_series"])
    code, out = promtool(["test", "rules", "recorded.test.yaml"], rdir)
    check(f"on the series the binary recorded ({n[0]} healthy, {n[1]} failing), promtool: healthy traffic fires "
          f"nothing; the failures fire {', '.join(a for a, ls in expected.items() if ls)}, and not "
          "SocketlessPushFailures (410s are clients leaving)", code == 0, out[-4000:])


# ---------------------------------------------------------------------------------------------
# The rendered objects.

RULE_KEYS = {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}
ON = {"dashboards": {"enabled": True}, "prometheusRule": {"enabled": True},
      "serviceMonitor": {"enabled": True}, "networkPolicy": {"internalFrom": [{"podSelector": {}}]}}


def check_configmap(rendered, dashboard):
    cms = of_kind(rendered, "ConfigMap")
    cms = [c for c in cms if c["metadata"]["name"].endswith("-dashboard")]
    if not check("one dashboard ConfigMap renders with dashboards.enabled", len(cms) == 1, f"got {len(cms)}"):
        return
    cm = cms[0]
    errors = []
    try:
        kubernetes_validate.validate(cm, KUBE, strict=True)
    except kubernetes_validate.ValidationError as e:
        errors.append(str(e))
    check("the dashboard ConfigMap validates (kubernetes-validate --strict)", not errors, errors)
    check("it carries the Grafana sidecar's label grafana_dashboard: \"1\"",
          cm["metadata"]["labels"].get("grafana_dashboard") == "1", cm["metadata"]["labels"])
    check("its data is dashboards/socketless.json, byte for byte",
          cm["data"].get("socketless.json") == open(DASHBOARD).read().rstrip("\n"))
    custom = of_kind(render(merge(ON, {"dashboards": {"label": "grafana_dashboard_socketless", "labelValue": "yes",
                                                        "folder": "Realtime", "namespace": "monitoring"}})), "ConfigMap")
    custom = [c for c in custom if c["metadata"]["name"].endswith("-dashboard")][0]
    check("dashboards.label/labelValue/folder/namespace land on the ConfigMap",
          custom["metadata"]["labels"].get("grafana_dashboard_socketless") == "yes"
          and "grafana_dashboard" not in custom["metadata"]["labels"]
          and custom["metadata"].get("annotations", {}).get("grafana_folder") == "Realtime"
          and custom["metadata"]["namespace"] == "monitoring", custom["metadata"])


def check_rule_shape(rule):
    """The PrometheusRule CRD's shape (monitoring.coreos.com/v1): what the operator's schema
    requires and what it allows, and what these alerts promise (severity, runbook)."""
    problems = []
    if rule.get("apiVersion") != "monitoring.coreos.com/v1":
        problems.append(f"apiVersion {rule.get('apiVersion')}")
    md = rule.get("metadata", {})
    if not md.get("name") or md.get("namespace") != NAMESPACE:
        problems.append(f"metadata {md}")
    if set(rule) - {"apiVersion", "kind", "metadata", "spec"} or set(rule.get("spec", {})) != {"groups"}:
        problems.append(f"unknown top-level or spec fields: {sorted(rule)} {sorted(rule.get('spec', {}))}")
    names = set()
    for g in rule.get("spec", {}).get("groups", []):
        if set(g) - {"name", "interval", "rules", "partial_response_strategy", "limit", "query_offset", "labels"}:
            problems.append(f"group fields {sorted(g)}")
        if not isinstance(g.get("name"), str) or not g["name"] or g["name"] in names:
            problems.append(f"group name {g.get('name')!r} missing or repeated")
        names.add(g.get("name"))
        for r in g.get("rules", []):
            if set(r) - RULE_KEYS:
                problems.append(f"{r.get('alert')}: unknown fields {sorted(set(r) - RULE_KEYS)}")
            if not isinstance(r.get("expr"), str) or not r["expr"].strip():
                problems.append(f"{r.get('alert')}: expr must be a non-empty string")
            if not re.fullmatch(r"([0-9]+(ms|s|m|h|d|w|y))+", str(r.get("for", ""))):
                problems.append(f"{r.get('alert')}: for {r.get('for')!r} is not a duration")
            for k in ("labels", "annotations"):
                if not all(isinstance(v, str) for v in r.get(k, {}).values()):
                    problems.append(f"{r.get('alert')}: {k} values must be strings")
            if r.get("labels", {}).get("severity") not in ("info", "warning", "critical"):
                problems.append(f"{r.get('alert')}: no severity")
            a = r.get("annotations", {})
            if not (a.get("summary") and a.get("description") and a.get("runbook_url", "").startswith("https://")):
                problems.append(f"{r.get('alert')}: summary, description and runbook_url are required")
    return problems


def alerts_of(rule):
    return {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}


def promtool(args, cwd):
    p = subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True)
    return p.returncode, p.stdout + p.stderr


def check_rules(rendered, work):
    rules = of_kind(rendered, "PrometheusRule")
    if not check("one PrometheusRule renders with prometheusRule.enabled", len(rules) == 1, f"got {len(rules)}"):
        return None
    rule = rules[0]
    problems = check_rule_shape(rule)
    check("the PrometheusRule has the CRD's shape, and every alert a severity, summary, description and "
          "runbook_url", not problems, problems)
    alerts = alerts_of(rule)
    print(f"alerts: {', '.join(alerts)}")
    with open(os.path.join(work, "rules.yaml"), "w") as f:
        yaml.safe_dump({"groups": rule["spec"]["groups"]}, f, sort_keys=False)
    code, out = promtool(["check", "rules", "rules.yaml"], work)
    check("promtool check rules accepts the rendered groups", code == 0, out)
    tests = sorted(f for f in os.listdir(FIXTURES) if f.endswith(".test.yaml"))
    for t in tests:
        shutil.copy(os.path.join(FIXTURES, t), work)
    code, out = promtool(["test", "rules", *tests], work)
    check(f"promtool test rules ({', '.join(tests)}): each alert fires on failing series and stays silent "
          "on healthy ones", code == 0, out)
    # Every alert is tested both ways.
    fires, silent = set(), set()
    for t in tests:
        with open(os.path.join(FIXTURES, t)) as f:
            for group in yaml.safe_load(f)["tests"]:
                for case in group.get("alert_rule_test", []):
                    (fires if case.get("exp_alerts") else silent).add(case["alertname"])
    check("every rendered alert has a test where it fires", not set(alerts) - fires, sorted(set(alerts) - fires))
    check("every rendered alert has a test where it stays silent", not set(alerts) - silent,
          sorted(set(alerts) - silent))
    # The tests can fail: with thresholds no failure reaches, the same tests must not pass.
    high = {k: {"ratio": 100} for k in ("gatewayIntegrationErrors", "backendErrors", "pushFailures",
                                          "dynamodbErrors", "upstreamErrors")}
    high["connectionLimit"] = {"perSecond": 1000}
    blunt = of_kind(render(merge(ON, {"prometheusRule": {"alerts": high}})), "PrometheusRule")[0]
    bdir = os.path.join(work, "blunt")
    os.makedirs(bdir)
    with open(os.path.join(bdir, "rules.yaml"), "w") as f:
        yaml.safe_dump({"groups": blunt["spec"]["groups"]}, f, sort_keys=False)
    for t in tests:
        shutil.copy(os.path.join(FIXTURES, t), bdir)
    code, out = promtool(["test", "rules", *tests], bdir)
    missing = [a for a in ("SocketlessDynamoDBErrors", "SocketlessConnectionLimit") if f"alertname: {a}" not in out]
    check("promtool test rules fails when the thresholds are out of reach (the tests can fail), naming the alerts",
          code != 0 and not missing, f"exit {code}, alerts not named: {missing}")
    return rule


def check_values(base_rule):
    """The values reach the rule: thresholds, for, severity, labels, selector, disabling."""
    r = of_kind(render(merge(ON, {"prometheusRule": {
        "labels": {"release": "kube-prometheus-stack"}, "alertLabels": {"team": "realtime"},
        "selector": 'namespace="chat",job=~"chat-socketless.*"',
        "alerts": {"dynamodbErrors": {"ratio": 0.2, "for": "15m", "severity": "warning"},
                   "podNotReady": {"enabled": False}}}})), "PrometheusRule")[0]
    a = alerts_of(r)
    d = a["SocketlessDynamoDBErrors"]
    check("prometheusRule.alerts.*: threshold, for and severity reach the alert",
          "> 0.2" in d["expr"] and d["for"] == "15m" and d["labels"]["severity"] == "warning", d)
    check("prometheusRule.alerts.*.enabled=false leaves the alert out", "SocketlessPodNotReady" not in a, sorted(a))
    check("prometheusRule.labels and alertLabels land on the object and on every alert",
          r["metadata"]["labels"].get("release") == "kube-prometheus-stack"
          and all(x["labels"].get("team") == "realtime" for x in a.values()))
    check("prometheusRule.selector replaces the namespace matcher in the socketless_* selectors",
          all('namespace="chat",job=~"chat-socketless.*"' in x["expr"] for n, x in a.items()
              if "socketless_" in x["expr"]) and 'namespace="prod"' not in d["expr"])
    no_sm = alerts_of(of_kind(render({"prometheusRule": {"enabled": True}}), "PrometheusRule")[0])
    check("SocketlessTargetDown renders only with serviceMonitor.enabled (which defines its job)",
          "SocketlessTargetDown" in alerts_of(base_rule) and "SocketlessTargetDown" not in no_sm)


def check_defaults_and_capabilities():
    plain = render({})
    check("by default neither the dashboard nor the PrometheusRule renders",
          not of_kind(plain, "PrometheusRule") and not any(
              c["metadata"]["name"].endswith("-dashboard") for c in of_kind(plain, "ConfigMap")))
    err = render_error({"prometheusRule": {"enabled": True}}, apis=[])
    check("prometheusRule.enabled without the monitoring.coreos.com/v1 API fails the render and says what to install",
          err is not None and "PrometheusRule API" in err and "kube-prometheus-stack" in err, err)
    err = render_error({"prometheusRule": {"enabled": True, "alerts": {"pushFailures": {"ratio": "high"}}}})
    check("the schema rejects a threshold that is not a number", err is not None and "ratio" in err, err)


def check_dashboard(dashboard, work):
    """What Grafana needs to import it as-is, and every query parses as PromQL."""
    problems = []
    if not dashboard.get("uid") or not dashboard.get("title") or dashboard.get("id") is not None:
        problems.append("uid and title required, no id (Grafana assigns it)")
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    if not {"datasource", "namespace"} <= variables:
        problems.append(f"variables {sorted(variables)}")
    ids, cells = set(), {}
    for p in dashboard["panels"]:
        if p["id"] in ids:
            problems.append(f"panel id {p['id']} repeated")
        ids.add(p["id"])
        g = p["gridPos"]
        if g["x"] < 0 or g["x"] + g["w"] > 24:
            problems.append(f"{p['title']!r} outside the 24 columns")
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                if (x, y) in cells:
                    problems.append(f"{p['title']!r} overlaps {cells[(x, y)]!r}")
                cells[(x, y)] = p["title"]
        if p["type"] != "row":
            if p.get("datasource", {}).get("uid") != "${datasource}" or not p.get("targets"):
                problems.append(f"{p['title']!r}: no targets on the $datasource variable")
            if not p.get("description"):
                problems.append(f"{p['title']!r}: no description")
    check("the dashboard imports as-is: uid, variables, unique panel ids, no overlapping panels, every "
          "panel described and on the $datasource variable", not problems, sorted(set(problems)))
    # Each query, variables filled in, as a recording rule: promtool parses it.
    rules = []
    for i, (title, expr) in enumerate(dashboard_exprs(dashboard)):
        e = expr.replace("$__rate_interval", "5m").replace("${release}", "rel-socketless").replace("$namespace", NAMESPACE)
        rules.append({"record": f"dashboard:query{i}", "expr": e})
    with open(os.path.join(work, "dashboard-queries.yaml"), "w") as f:
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, f)
    code, out = promtool(["check", "rules", "dashboard-queries.yaml"], work)
    check(f"all {len(rules)} dashboard queries parse as PromQL (promtool check rules)", code == 0, out)


def check_gateway_podmonitor():
    """The gateway's PodMonitor scrapes /metrics on the port the StatefulSet's container names,
    on exactly the gateway's pods."""
    values = {"gateway": {"enabled": True, "replicaCount": 2},
              "gatewayPodMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}}}
    rendered = render(values)
    pms = of_kind(rendered, "PodMonitor")
    if not check("one PodMonitor renders with gateway.enabled and gatewayPodMonitor.enabled", len(pms) == 1,
                 f"got {len(pms)}"):
        return
    pm = pms[0]
    sts = of_kind(rendered, "StatefulSet")[0]
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    ports = {p["name"] for c in sts["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
    selector = pm["spec"]["selector"]["matchLabels"]
    backend_pods = [d["spec"]["template"]["metadata"]["labels"] for d in of_kind(rendered, "Deployment")]
    eps = pm["spec"]["podMetricsEndpoints"]
    problems = []
    if set(pm) - {"apiVersion", "kind", "metadata", "spec"} or pm["apiVersion"] != "monitoring.coreos.com/v1":
        problems.append(f"top level {sorted(pm)} {pm['apiVersion']}")
    if set(pm["spec"]) - {"namespaceSelector", "selector", "podMetricsEndpoints", "jobLabel", "podTargetLabels"}:
        problems.append(f"spec fields {sorted(pm['spec'])}")
    if not all(pod_labels.get(k) == v for k, v in selector.items()):
        problems.append(f"selector {selector} does not match the gateway pods {pod_labels}")
    if any(all(b.get(k) == v for k, v in selector.items()) for b in backend_pods):
        problems.append("the selector also matches the backend pods")
    if len(eps) != 1 or eps[0].get("port") not in ports or eps[0].get("path") != "/metrics":
        problems.append(f"endpoints {eps} against container ports {ports}")
    if pm["spec"]["namespaceSelector"] != {"matchNames": [NAMESPACE]}:
        problems.append(f"namespaceSelector {pm['spec']['namespaceSelector']}")
    if pm["metadata"]["labels"].get("release") != "kube-prometheus-stack":
        problems.append("gatewayPodMonitor.labels missing")
    check("the PodMonitor scrapes /metrics on the gateway container's named port, gateway pods only, with its labels",
          not problems, problems)
    check("no PodMonitor without gateway.enabled",
          not of_kind(render({"gatewayPodMonitor": {"enabled": True}}), "PodMonitor"))
    err = render_error(values, apis=[])
    check("gatewayPodMonitor.enabled without the PodMonitor API fails the render and says what to install",
          err is not None and "PodMonitor API" in err and "kube-prometheus-stack" in err, err)


# ---------------------------------------------------------------------------------------------
# Every metric name the dashboard, the alerts and the fixtures use is one the binary exports.

def check_names(scraped, dashboard, rule):
    exported = set(scraped)
    used = {}
    for title, expr in dashboard_exprs(dashboard):
        for n in metric_names(expr):
            used.setdefault(n, set()).add(f"dashboard panel {title!r}")
    for name, r in alerts_of(rule).items():
        for n in metric_names(r["expr"]):
            used.setdefault(n, set()).add(f"alert {name}")
    unknown = {n: sorted(w) for n, w in used.items() if n not in exported and n not in EXTERNAL}
    print(f"metric names used: {len(used)} ({len(used) - len(set(used) & set(EXTERNAL))} from the binary, "
          f"{len(set(used) & set(EXTERNAL))} from Prometheus/kube-state-metrics); the binary exported "
          f"{len(exported)} sample names")
    check("every metric the dashboard and the alerts query is one the binary exports (or kube-state-metrics'/up)",
          not unknown, "; ".join(f"{n} (in {', '.join(w)})" for n, w in sorted(unknown.items())))
    # The same test on a misspelt query: the extractor must hand back the bad name for it to fail.
    probe = metric_names('histogram_quantile(0.99, sum by (le) (rate(socketless_gateway_conects_total'
                         '{namespace="$namespace",result=~"a|b"}[$__rate_interval]))) / on (pod) group_left up')
    check("a misspelt name in a query is caught (socketless_gateway_conects_total is not exported)",
          probe == {"socketless_gateway_conects_total", "up"} and "socketless_gateway_conects_total" not in exported,
          probe)
    dash_names = {n for _, e in dashboard_exprs(dashboard) for n in metric_names(e)}
    check("the dashboard queries at least one metric (the extractor finds names)", len(dash_names) >= 10,
          sorted(dash_names))
    # The fixtures' series: name exported, labels as exported (target labels aside), values seen.
    bad = []
    for t in sorted(os.listdir(FIXTURES)):
        if not t.endswith(".test.yaml"):
            continue
        with open(os.path.join(FIXTURES, t)) as f:
            for group in yaml.safe_load(f)["tests"]:
                for s in group.get("input_series", []):
                    m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\}$", s["series"])
                    name, labels = m.group(1), dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
                    if name in EXTERNAL:
                        continue
                    if name not in exported:
                        bad.append(f"{t}: {name} is not exported")
                        continue
                    keys = {k for ls in scraped[name] for k in ls}
                    for k, v in labels.items():
                        if k in TARGET_LABELS:
                            continue
                        if k not in keys:
                            bad.append(f"{t}: {name} has no label {k}")
                        elif v not in {ls.get(k) for ls in scraped[name]} | UNRECORDED.get((name, k), set()):
                            bad.append(f"{t}: {name}{{{k}=\"{v}\"}} was never seen")
    check("every series in the promtool fixtures has a name, labels and label values the binary exports",
          not bad, "; ".join(bad))


def main():
    if len(sys.argv) != 2 or not os.access(sys.argv[1], os.X_OK):
        sys.exit("usage: check-observability.py BINARY (an executable socketless)")
    if shutil.which("promtool") is None:
        sys.exit("promtool is missing (Debian: apt-get install prometheus)")
    binary = os.path.abspath(sys.argv[1])
    with open(DASHBOARD) as f:
        dashboard = json.load(f)
    check_defaults_and_capabilities()
    work = tempfile.mkdtemp(prefix="socketless-obs-")
    try:
        rendered = render(ON)
        check_configmap(rendered, dashboard)
        check_dashboard(dashboard, work)
        rule = check_rules(rendered, work)
        if rule is None:
            TALLY.finish()
        check_values(rule)
        check_gateway_podmonitor()
        healthy, failing = record(binary, work)
        scraped = {}
        for text in list(healthy.values()) + list(failing.values()):
            for k, v in parse_metrics(text).items():
                scraped.setdefault(k, []).extend(v)
        check("the recording run exported serve's and the gateway's metrics",
              "socketless_messages_total" in scraped and "socketless_gateway_connects_total" in scraped,
              sorted(scraped))
        check_names(scraped, dashboard, rule)
        check_recorded(rule, healthy, failing, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    TALLY.finish()


if __name__ == "__main__":
    main()
