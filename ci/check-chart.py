#!/usr/bin/env python3
"""Chart tests: render a matrix of values with a real Helm (helm-python-sdk), validate every
manifest (kubernetes-validate --strict for built-in kinds, cloudcoil-models-keda for KEDA's),
assert what each toggle renders and the hardening of every container, show the schema and the
template checks rejecting bad values, and run a strict lint. Prints `chart: N passed, N failed`.
"""
import copy
import itertools
import json
import os
import sys

import helm_python
import kubernetes_validate
import yaml
from cloudcoil.models.keda.v1alpha1 import ScaledObject, TriggerAuthentication
from helm_python import Chart

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHART_DIR = os.path.join(ROOT, "chart", "socketless")
KUBE = "1.33.0"
ROLE = "arn:aws:iam::123456789012:role/socketless-backend"
chart = Chart.load(CHART_DIR)
passed = failed = 0


def check(name, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
        print(f"ok: {name}")
    else:
        failed += 1
        print(f"FAILED: {name} {detail}")


def merge(base, extra):
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def render(values, keda_crd=False):
    """Renders with the given capabilities; returns the parsed documents (NOTES excluded)."""
    opts = {"name": "rel", "namespace": "prod", "kube_version": "v" + KUBE}
    if keda_crd:
        opts["api_versions"] = ["keda.sh/v1alpha1"]
    out = json.loads(helm_python._native.call_string("helm_render", chart._raw(), json.dumps(values), json.dumps(opts)))
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt") or not text.strip():
            continue
        for d in yaml.safe_load_all(text):
            if d:
                d["_template"] = path
                docs.append(d)
    return docs


def render_error(values, keda_crd=False):
    try:
        render(values, keda_crd)
        return None
    except helm_python.HelmError as e:
        return str(e)


def kinds(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def validate_all(label, docs):
    ok = True
    for d in docs:
        doc = {k: v for k, v in d.items() if k != "_template"}
        try:
            if d["apiVersion"] == "keda.sh/v1alpha1":
                (ScaledObject if d["kind"] == "ScaledObject" else TriggerAuthentication).model_validate(doc)
            else:
                kubernetes_validate.validate(doc, KUBE, strict=True)
        except Exception as e:  # noqa: BLE001 - any validation failure is a test failure
            ok = False
            print(f"   {label}: {d['kind']}/{d['metadata']['name']} invalid: {e}")
    return ok


def containers(docs):
    for d in docs:
        if d["kind"] == "Deployment":
            spec = d["spec"]["template"]["spec"]
        elif d["kind"] == "Pod":
            spec = d["spec"]
        else:
            continue
        for c in spec["containers"]:
            yield d, spec, c


def hardened(docs):
    problems = []
    for d, spec, c in containers(docs):
        sc, psc = c.get("securityContext", {}), spec.get("securityContext", {})
        want = [
            sc.get("runAsNonRoot") is True, sc.get("runAsUser") == 65532, sc.get("readOnlyRootFilesystem") is True,
            sc.get("allowPrivilegeEscalation") is False, sc.get("capabilities", {}).get("drop") == ["ALL"],
            sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", psc.get("runAsNonRoot") is True,
            psc.get("seccompProfile", {}).get("type") == "RuntimeDefault",
        ]
        if not all(want):
            problems.append(f"{d['kind']}/{d['metadata']['name']}/{c['name']}")
    return problems


def internal_never_exposed(docs):
    for ing in kinds(docs, "Ingress"):
        for rule in ing["spec"]["rules"]:
            for p in rule["http"]["paths"]:
                port = p["backend"]["service"]["port"]
                if port.get("name") == "internal" or port.get("number") == 9090 or p["backend"]["service"]["name"].endswith("-internal"):
                    return False
    for svc in kinds(docs, "Service"):
        if svc["metadata"]["name"].endswith("-internal") and svc["spec"]["type"] != "ClusterIP":
            return False
        if svc["spec"]["type"] != "ClusterIP" and any(p.get("port") == 9090 for p in svc["spec"]["ports"]):
            return False
    return True


BASE = {"config": {"region": "us-east-1"}}

# 1. The 16 combinations of the four toggles.
for irsa, ingress, svc_type, keda in itertools.product([False, True], [False, True], ["ClusterIP", "NodePort"], [False, True]):
    label = f"irsa={irsa} ingress={ingress} service={svc_type} keda={keda}"
    values = merge(BASE, {
        "serviceAccount": {"irsa": {"roleArn": ROLE if irsa else ""}},
        "ingress": {"enabled": ingress},
        "service": {"type": svc_type, "nodePort": 30080 if svc_type == "NodePort" else None},
        "keda": {"enabled": keda, "cloudwatch": {"apiId": "a1b2c3d4e5", "stage": "prod"}},
    })
    docs = render(values, keda_crd=keda)
    ok = validate_all(label, docs)
    sa = kinds(docs, "ServiceAccount")[0]
    ann = sa["metadata"].get("annotations", {})
    ok &= (ann.get("eks.amazonaws.com/role-arn") == ROLE) == irsa
    ok &= bool(kinds(docs, "Ingress")) == ingress
    if ingress:
        ing = kinds(docs, "Ingress")[0]
        a = ing["metadata"]["annotations"]
        ok &= ing["spec"]["ingressClassName"] == "alb"
        ok &= a["alb.ingress.kubernetes.io/target-type"] == "ip" and a["alb.ingress.kubernetes.io/healthcheck-path"] == "/readyz"
        ok &= a["alb.ingress.kubernetes.io/scheme"] == "internet-facing"
        ok &= a["alb.ingress.kubernetes.io/target-group-attributes"] == "deregistration_delay.timeout_seconds=5"
    public = [s for s in kinds(docs, "Service") if not s["metadata"]["name"].endswith("-internal")][0]
    ok &= public["spec"]["type"] == svc_type
    ok &= ("nodePort" in public["spec"]["ports"][0]) == (svc_type == "NodePort")
    ok &= bool(kinds(docs, "ScaledObject")) == keda
    dep = [d for d in kinds(docs, "Deployment")][0]
    ok &= ("replicas" in dep["spec"]) == (not keda)
    if keda:
        so = kinds(docs, "ScaledObject")[0]
        trig = so["spec"]["triggers"][0]
        ok &= trig["type"] == "aws-cloudwatch" and trig["metadata"]["dimensionName"] == "ApiId;Stage"
        ok &= trig["metadata"]["dimensionValue"] == "a1b2c3d4e5;prod" and trig["metadata"]["metricName"] == "MessageCount"
        ok &= trig["authenticationRef"]["name"] == kinds(docs, "TriggerAuthentication")[0]["metadata"]["name"]
        ok &= kinds(docs, "TriggerAuthentication")[0]["spec"]["podIdentity"]["provider"] == "aws"
        ok &= not kinds(docs, "HorizontalPodAutoscaler")
    ok &= not hardened(docs)
    ok &= internal_never_exposed(docs)
    ok &= all(d["metadata"]["namespace"] == "prod" for d in docs)
    check(f"matrix {label}", ok)

# 2. Variants: LoadBalancer (NLB), gateway, HPA, PDB, every KEDA trigger.
docs = render(merge(BASE, {"service": {"type": "LoadBalancer"}}))
svc = [s for s in kinds(docs, "Service") if not s["metadata"]["name"].endswith("-internal")][0]
a = svc["metadata"]["annotations"]
check("LoadBalancer renders an internal NLB (ip targets) for a VPC link",
      validate_all("lb", docs) and a["service.beta.kubernetes.io/aws-load-balancer-type"] == "external"
      and a["service.beta.kubernetes.io/aws-load-balancer-nlb-target-type"] == "ip"
      and a["service.beta.kubernetes.io/aws-load-balancer-scheme"] == "internal" and internal_never_exposed(docs))

gw_values = merge(BASE, {"gateway": {"enabled": True, "stage": "dev", "service": {"type": "NodePort", "nodePort": 30081},
                                     "ingress": {"enabled": True, "className": "nginx", "host": "ws.example.com"}},
                         "config": {"replyMode": "async"}})
docs = render(gw_values)
gw = [d for d in kinds(docs, "Deployment") if d["metadata"]["name"].endswith("-gateway")]
args = gw[0]["spec"]["template"]["spec"]["containers"][0]["args"] if gw else []
backend_env = {e["name"]: e.get("value") for e in [d for d in kinds(docs, "Deployment") if not d["metadata"]["name"].endswith("-gateway")][0]["spec"]["template"]["spec"]["containers"][0]["env"]}
probe = kinds(docs, "Pod")
check("gateway: Deployment, NodePort Service, its own Ingress, helm test probe through it",
      validate_all("gateway", docs) and gw and args[0] == "gateway"
      and "IntegrationUri=http://rel-socketless.prod.svc:8080" in args and "DisconnectContext=true" in args
      and "SharedSecret=$(SOCKETLESS_SHARED_SECRET)" in args
      and any(s["metadata"]["name"].endswith("-gateway") and s["spec"]["ports"][0].get("nodePort") == 30081 for s in kinds(docs, "Service"))
      and any(i["metadata"]["name"].endswith("-gateway") for i in kinds(docs, "Ingress"))
      and backend_env.get("SOCKETLESS_PUSH_ENDPOINT") == "http://rel-socketless-gateway.prod.svc:8081/dev"
      and probe and probe[0]["spec"]["containers"][0]["args"][:2] == ["probe", "ws://rel-socketless-gateway.prod.svc:8081/dev"]
      and probe[0]["metadata"]["annotations"]["helm.sh/hook"] == "test" and not hardened(docs) and internal_never_exposed(docs),
      json.dumps(args))

docs = render(merge(BASE, {"tests": {"url": "wss://abc.execute-api.us-east-1.amazonaws.com/prod"}}))
check("helm test probes a given API Gateway URL", kinds(docs, "Pod")[0]["spec"]["containers"][0]["args"][1] == "wss://abc.execute-api.us-east-1.amazonaws.com/prod")
check("no gateway and no URL: no test pod", not kinds(render(BASE), "Pod"))

docs = render(merge(BASE, {"autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 9}}))
hpa = kinds(docs, "HorizontalPodAutoscaler")
check("HPA fallback: rendered, replicas left out", validate_all("hpa", docs) and hpa and hpa[0]["spec"]["maxReplicas"] == 9
      and "replicas" not in kinds(docs, "Deployment")[0]["spec"])

docs = render(merge(BASE, {"podDisruptionBudget": {"enabled": True, "maxUnavailable": 1}}))
pdb = kinds(docs, "PodDisruptionBudget")[0]
check("PDB with maxUnavailable", validate_all("pdb", docs) and pdb["spec"] == {"maxUnavailable": 1, "selector": pdb["spec"]["selector"]})
check("PDB off", not kinds(render(merge(BASE, {"podDisruptionBudget": {"enabled": False}})), "PodDisruptionBudget"))

docs = render(merge(BASE, {"keda": {"enabled": True, "cloudwatch": {"enabled": True, "apiId": "abc", "roleArn": ROLE},
                                    "prometheus": {"enabled": True, "serverAddress": "http://prometheus.monitoring:9090"},
                                    "cpu": {"enabled": True, "utilization": 60},
                                    "fallback": {"enabled": True},
                                    "extraTriggers": [{"type": "cron", "metadata": {"timezone": "UTC", "start": "0 8 * * *", "end": "0 18 * * *", "desiredReplicas": "4"}}]}}), keda_crd=True)
so = kinds(docs, "ScaledObject")[0]
types = [t["type"] for t in so["spec"]["triggers"]]
check("KEDA: cloudwatch, prometheus, cpu and custom triggers, role ARN on the TriggerAuthentication",
      validate_all("keda-all", docs) and types == ["aws-cloudwatch", "prometheus", "cpu", "cron"]
      and kinds(docs, "TriggerAuthentication")[0]["spec"]["podIdentity"]["roleArn"] == ROLE and "fallback" in so["spec"], json.dumps(types))

docs = render(merge(BASE, {"sharedSecret": {"existingSecret": "my-secret", "existingSecretKey": "token"}}))
env = {e["name"]: e for e in kinds(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
check("shared secret from an existing Secret (none created)",
      not kinds(docs, "Secret") and env["SOCKETLESS_SHARED_SECRET"]["valueFrom"]["secretKeyRef"] == {"name": "my-secret", "key": "token"})
docs = render(BASE)
env = {e["name"]: e for e in kinds(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
check("shared secret created by default and wired into the env",
      kinds(docs, "Secret") and env["SOCKETLESS_SHARED_SECRET"]["valueFrom"]["secretKeyRef"]["name"] == kinds(docs, "Secret")[0]["metadata"]["name"]
      and env["SOCKETLESS_SHUTDOWN_DELAY"]["value"] == "5s" and env["SOCKETLESS_DRAIN_TIMEOUT"]["value"] == "20s")
dep = kinds(docs, "Deployment")[0]["spec"]["template"]["spec"]
c = dep["containers"][0]
check("probes on /healthz and /readyz, topology spread, grace period",
      c["livenessProbe"]["httpGet"]["path"] == "/healthz" and c["readinessProbe"]["httpGet"]["path"] == "/readyz"
      and len(dep["topologySpreadConstraints"]) == 2 and dep["terminationGracePeriodSeconds"] == 30)
check("every container is hardened", not hardened(docs), hardened(docs))

# 3. Bad values are rejected: by the schema...
bad_values = {
    "service.type Bogus": {"service": {"type": "Bogus"}},
    "malformed IRSA role ARN": {"serviceAccount": {"irsa": {"roleArn": "arn:aws:iam::12:role/x"}}},
    "unknown key": {"servce": {"type": "NodePort"}},
    "unknown nested key": {"service": {"typo": 1}},
    "string where an integer goes": {"config": {"shutdownDelaySeconds": "five"}},
    "bad store": {"config": {"store": "postgres"}},
    "bad reply mode": {"config": {"replyMode": "carrier-pigeon"}},
    "nodePort out of range": {"service": {"type": "NodePort", "nodePort": 80}},
    "malformed certificate ARN": {"ingress": {"certificateArn": "not-an-arn"}},
    "malformed KEDA role ARN": {"keda": {"cloudwatch": {"roleArn": "role/x"}}},
    "bad duration": {"config": {"syncInterval": "a minute"}},
}
for name, v in bad_values.items():
    try:
        chart.validate_schema(merge(BASE, v))
        check(f"schema rejects {name}", False, "accepted")
    except helm_python.HelmValuesError as e:
        check(f"schema rejects {name}", True)

# ...and by the template checks, with messages that say what to do.
fails = {
    "grace period too short": ({"terminationGracePeriodSeconds": 20}, False, "must exceed config.shutdownDelaySeconds + config.drainTimeoutSeconds"),
    "KEDA without its CRD": ({"keda": {"enabled": True, "cloudwatch": {"apiId": "abc"}}}, False, "install KEDA (its CRDs) first"),
    "KEDA and HPA together": ({"keda": {"enabled": True, "cloudwatch": {"apiId": "abc"}}, "autoscaling": {"enabled": True}}, True, "choose one owner"),
    "ALB deregistration delay above the shutdown delay": ({"ingress": {"enabled": True, "deregistrationDelaySeconds": 30}}, False, "must not exceed config.shutdownDelaySeconds"),
    "memory store with several replicas": ({"config": {"store": "memory"}}, False, "keeps sessions in one pod"),
}
for name, (v, crd, msg) in fails.items():
    err = render_error(merge(BASE, v), keda_crd=crd)
    check(f"render fails: {name}", err is not None and msg in err, err or "rendered")

# 4. Example values files render and validate.
for example in sorted(os.listdir(os.path.join(CHART_DIR, "examples"))):
    with open(os.path.join(CHART_DIR, "examples", example)) as f:
        v = yaml.safe_load(f)
    docs = render(v, keda_crd=True)
    check(f"example {example} renders and validates", validate_all(example, docs) and not hardened(docs) and internal_never_exposed(docs))

# 5. One version everywhere.
with open(os.path.join(ROOT, "Cargo.toml")) as f:
    crate_version = next(l.split('"')[1] for l in f if l.startswith("version = "))
with open(os.path.join(CHART_DIR, "Chart.yaml")) as f:
    meta = yaml.safe_load(f)
check("chart appVersion equals the crate version", meta["appVersion"] == crate_version, f"{meta['appVersion']} vs {crate_version}")

# 6. Strict lint.
lint = helm_python.lint(CHART_DIR, BASE, strict=True, kube_version="v" + KUBE)
serious = [m for m in lint["messages"] if m["severity"] >= 2] + lint["errors"]
check("helm lint --strict: no warnings or errors", not serious, json.dumps(lint))

print(f"chart: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
