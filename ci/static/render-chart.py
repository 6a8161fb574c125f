#!/usr/bin/env python3
"""Renders the chart with the value sets users deploy into a directory, one file per set, for
the static checks (checkov). Sets: the defaults (with a shared secret), the EKS example (with a
KEDA CloudWatch trigger), the kind e2e's values, and a VPC link set (an internal NLB, the app
sidecar, an internal API token of its own, the gateway behind its own HTTPS ALB). Usage:
render-chart.py OUT_DIR
"""
import copy
import json
import os
import sys

import helm_python
import yaml
from helm_python import Chart

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHART_DIR = os.path.join(ROOT, "chart", "socketless")


def merge(base, extra):
    out = copy.deepcopy(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load(path):
    with open(os.path.join(ROOT, path)) as f:
        return yaml.safe_load(f)


SETS = {
    "defaults": {"config": {"region": "us-east-1"}, "sharedSecret": {"value": "static-check-secret-0123"}},
    "eks": merge(load("chart/socketless/examples/eks-irsa-alb.yaml"),
                 {"keda": {"enabled": True, "cloudwatch": {"apiId": "a1b2c3d4e5"}}}),
    "kind": merge(load("chart/socketless/examples/kind-nodeport-gateway.yaml"), load("ci/fixtures/kind/values.yaml")),
    "vpc-link": {"config": {"region": "us-east-1"}, "sharedSecret": {"value": "static-check-secret-0123"},
                 "service": {"type": "LoadBalancer"},
                 "internalApi": {"token": {"value": "static-check-internal-token-0123"}},
                 "app": {"enabled": True, "image": {"repository": "registry.example.com/chat-app", "tag": "1.4.2"}},
                 "gateway": {"enabled": True, "replicaCount": 2, "ingress": {
                     "enabled": True, "host": "ws.example.com",
                     "certificateArn": "arn:aws:acm:us-east-1:123456789012:certificate/0a1b2c3d-4e5f-6789-abcd-ef0123456789"}}},
}

out_dir = sys.argv[1]
os.makedirs(out_dir, exist_ok=True)
chart = Chart.load(CHART_DIR)
for name, values in SETS.items():
    opts = {"name": "socketless", "namespace": "socketless", "kube_version": "v1.33.0",
            "api_versions": ["keda.sh/v1alpha1"]}
    rendered = json.loads(helm_python._native.call_string("helm_render", chart._raw(), json.dumps(values), json.dumps(opts)))
    docs = [text for path, text in sorted(rendered.items()) if not path.endswith("NOTES.txt") and text.strip()]
    with open(os.path.join(out_dir, f"{name}.yaml"), "w") as f:
        f.write("\n---\n".join(docs))
    print(f"rendered {name}: {sum(1 for t in docs for d in yaml.safe_load_all(t) if d)} objects")
