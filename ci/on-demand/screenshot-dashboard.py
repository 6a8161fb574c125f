#!/usr/bin/env python3
"""A picture of the chart's dashboard without Grafana: runs `socketless serve` (replies pushed
through `@connections`) behind `socketless gateway` under a little load, a local Prometheus
scraping both every second, then draws the dashboard's queries
(chart/socketless/dashboards/socketless.json, `$namespace` set to the scrape's label) as line
charts in one HTML page and screenshots it with headless Chromium.

    python3 ci/on-demand/screenshot-dashboard.py BIN EXAMPLES_DIR OUT.png

BIN is the `socketless` binary, EXAMPLES_DIR holds `ws_load` and `ws_connect` (bench/). The load
is bounded: about 75 s of WebSocket echo and handshakes on 127.0.0.1. Panels whose series do not
exist in such a run (DynamoDB, the upstream app, kube-state-metrics) are named under the charts.
"""
import html
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "ci", "lib"))
from checklib import CHROMIUM, free_port, http, stop, wait_status  # noqa: E402

BIN, EX, OUT = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2]), os.path.abspath(sys.argv[3])
DASHBOARD = os.path.join(ROOT, "chart", "socketless", "dashboards", "socketless.json")
NAMESPACE = "socketless"
SECRET = "dashboard-shared-secret-0123456"
RATE = "5s"
COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
work = tempfile.mkdtemp(prefix="socketless-dashboard-")
procs = []


def spawn(name, argv):
    log = open(os.path.join(work, f"{name}.log"), "wb")
    p = subprocess.Popen(argv, stdout=log, stderr=log)
    procs.append(p)
    return p


def load(ws_url):
    """Echo at two levels, then a handshake storm, then echo again: about 75 s."""
    steps = [("ws_load", ["--clients", "8", "--duration", "20s", "--warmup", "0s"]),
             ("ws_load", ["--clients", "48", "--duration", "20s", "--warmup", "0s"]),
             ("ws_connect", ["--clients", "8", "--duration", "15s"]),
             ("ws_load", ["--clients", "16", "--duration", "20s", "--warmup", "0s"])]
    for tool, args in steps:
        subprocess.run([os.path.join(EX, tool), ws_url, *args], capture_output=True, timeout=120, check=True)


def query_range(prom, expr, start, end):
    q = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": "1"})
    status, body = http("GET", f"{prom}/api/v1/query_range?{q}")
    if status != 200:
        raise SystemExit(f"Prometheus refused {expr}: {status} {body}")
    return json.loads(body)["data"]["result"]


def label_of(metric, legend):
    if legend and "{{" in legend:
        out = legend
        for k, v in metric.items():
            out = out.replace("{{" + k + "}}", v)
        return out
    return ", ".join(f"{k}={v}" for k, v in metric.items() if k != "__name__") or legend or "value"


def short(v):
    """A y-axis label that fits: 18.2k, 0.48m (thousandths), 3.1."""
    if v >= 1000:
        return f"{v / 1000:.3g}k"
    if v < 0.01:
        return f"{v * 1000:.2g}m"
    return f"{v:.3g}"


def svg(series, width=420, height=170):
    points = [(t, v) for s in series for t, v in s["values"]]
    if not points:
        return ""
    t0, t1 = min(t for t, _ in points), max(t for t, _ in points)
    top = max(v for _, v in points) or 1.0
    pad_l, pad_b = 46, 18
    w, h = width - pad_l - 6, height - pad_b - 6

    def xy(t, v):
        return pad_l + (t - t0) / max(t1 - t0, 1) * w, 6 + h - v / top * h

    parts = [f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
             f'<rect x="{pad_l}" y="6" width="{w}" height="{h}" fill="#fafafa" stroke="#ddd"/>',
             f'<text x="{pad_l - 4}" y="14" font-size="10" text-anchor="end">{short(top)}</text>',
             f'<text x="{pad_l - 4}" y="{6 + h}" font-size="10" text-anchor="end">0</text>',
             f'<text x="{pad_l}" y="{height - 4}" font-size="10">-{t1 - t0:.0f} s</text>',
             f'<text x="{pad_l + w}" y="{height - 4}" font-size="10" text-anchor="end">now</text>']
    for i, s in enumerate(series):
        pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(t, v) for t, v in s["values"]))
        parts.append(f'<polyline fill="none" stroke="{COLOURS[i % len(COLOURS)]}" stroke-width="1.6" points="{pts}"/>')
    parts.append("</svg>")
    return "".join(parts)


def page(panels, empty, window):
    cells = []
    for title, series in panels:
        legend = "".join(
            f'<span style="color:{COLOURS[i % len(COLOURS)]}">■</span> {html.escape(s["label"])} &nbsp;'
            for i, s in enumerate(series[:6]))
        cells.append(f'<div class="p"><h3>{html.escape(title)}</h3>{svg(series)}<div class="l">{legend}</div></div>')
    return f"""<!doctype html><html><head><meta charset="utf-8"><style>
body {{ font-family: sans-serif; margin: 14px; background: #fff; color: #222; }}
h1 {{ font-size: 17px; margin: 0 0 4px; }} .s {{ font-size: 12px; color: #555; margin-bottom: 10px; }}
.g {{ display: grid; grid-template-columns: repeat(3, 440px); gap: 8px; }}
.p {{ border: 1px solid #ddd; padding: 6px 8px; }} h3 {{ font-size: 13px; margin: 0 0 4px; }}
.l {{ font-size: 11px; color: #444; height: 28px; overflow: hidden; }}
</style></head><body>
<h1>socketless dashboard queries (chart/socketless/dashboards/socketless.json), drawn from Prometheus</h1>
<div class="s">Not Grafana: each panel is the dashboard's PromQL with $namespace="{NAMESPACE}" and
$__rate_interval={RATE}, run by a local Prometheus scraping every second a
<code>socketless gateway</code> in front of <code>serve --reply-mode async</code> (each reply pushed
through <code>@connections</code>) under {window:.0f} s of echo load (8, then 48 clients), a handshake
storm, then 16 clients.
No series in this run (no DynamoDB, upstream app or kube-state-metrics): {html.escape(", ".join(empty))}.</div>
<div class="g">{"".join(cells)}</div></body></html>"""


def main():
    if not CHROMIUM:
        raise SystemExit("needs chromium")
    port, internal, gport, prom_port = free_port(), free_port(), free_port(), free_port()
    os.environ.update(AWS_ACCESS_KEY_ID="dashboard", AWS_SECRET_ACCESS_KEY="dashboard", AWS_REGION="us-east-1")
    spawn("serve", [BIN, "serve", "--listen", f"127.0.0.1:{port}", "--internal-listen", f"127.0.0.1:{internal}",
                    "--shared-secret", SECRET, "--reply-mode", "async", "--push-endpoint",
                    f"http://127.0.0.1:{gport}/dev", "--shutdown-delay", "0s"])
    if not wait_status(f"http://127.0.0.1:{internal}/readyz", 200, 30):
        raise SystemExit(f"serve did not turn ready (logs in {work})")
    spawn("gateway", [BIN, "gateway", "--listen", f"127.0.0.1:{gport}", "--param",
                      f"IntegrationUri=http://127.0.0.1:{port}", "--param", f"SharedSecret={SECRET}",
                      "--param", "StageName=dev", "--shutdown-delay", "0s"])
    if not wait_status(f"http://127.0.0.1:{gport}/readyz", 200, 30):
        raise SystemExit(f"the gateway did not turn ready (logs in {work})")
    config = os.path.join(work, "prometheus.yml")
    with open(config, "w") as f:
        f.write(f"""global:
  scrape_interval: 1s
scrape_configs:
  - job_name: serve
    static_configs:
      - targets: ["127.0.0.1:{internal}"]
        labels: {{namespace: "{NAMESPACE}", pod: "socketless-0"}}
  - job_name: gateway
    static_configs:
      - targets: ["127.0.0.1:{gport}"]
        labels: {{namespace: "{NAMESPACE}", pod: "socketless-gateway-0"}}
""")
    spawn("prometheus", ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={work}/tsdb",
                         f"--web.listen-address=127.0.0.1:{prom_port}"])
    prom = f"http://127.0.0.1:{prom_port}"
    if not wait_status(f"{prom}/-/ready", 200, 60):
        raise SystemExit(f"Prometheus did not turn ready (logs in {work})")
    try:
        time.sleep(3)
        start = time.time()
        load(f"ws://127.0.0.1:{gport}/dev")
        time.sleep(3)
        end = time.time()
        with open(DASHBOARD) as f:
            dashboard = json.load(f)
        panels, empty = [], []
        for p in dashboard["panels"]:
            if not p.get("targets"):
                continue
            series = []
            for t in p["targets"]:
                expr = t["expr"].replace("$namespace", NAMESPACE).replace("$__rate_interval", RATE)
                expr = expr.replace("${release}", "socketless")
                for r in query_range(prom, expr, start, end):
                    values = [(float(ts) - start, float(v)) for ts, v in r["values"] if v not in ("NaN", "+Inf", "-Inf")]
                    if values:
                        series.append({"label": label_of(r["metric"], t.get("legendFormat")), "values": values})
            if series:
                panels.append((p["title"], series))
            else:
                empty.append(p["title"])
    finally:
        for p in procs:
            stop(p)
    page_path = os.path.join(work, "dashboard.html")
    with open(page_path, "w") as f:
        f.write(page(panels, empty, end - start))
    rows = (len(panels) + 2) // 3
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--user-data-dir={work}/chromium", f"--window-size=1370,{110 + rows * 262}",
                    f"--screenshot={OUT}", f"file://{page_path}"],
                   capture_output=True, timeout=120, check=True)
    print(f"{len(panels)} panels drawn, {len(empty)} without series; screenshot: {os.path.relpath(OUT, ROOT)}")


if __name__ == "__main__":
    main()
