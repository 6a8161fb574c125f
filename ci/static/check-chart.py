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
import re
import sys

import helm_python
import kubernetes_validate
import yaml
from cloudcoil.models.keda.v1alpha1 import ScaledObject, TriggerAuthentication
from helm_python import Chart

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from checklib import Tally  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# CHECK_CHART_DIR points the same tests at another copy of the chart (to show that a test fails
# on an older version of it).
CHART_DIR = os.environ.get("CHECK_CHART_DIR") or os.path.join(ROOT, "chart", "socketless")
KUBE = "1.33.0"
ROLE = "arn:aws:iam::123456789012:role/socketless-backend"
CERT = "arn:aws:acm:us-east-1:123456789012:certificate/0a1b2c3d-4e5f-6789-abcd-ef0123456789"
SECRET = "e2e-Shared_secret:0123456789"
chart = Chart.load(CHART_DIR)
TALLY = Tally("chart")
check = TALLY.check


def merge(base, extra):
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def render_raw(values, keda_crd=False, apis=(), name="rel", kube=KUBE):
    """Renders with the given capabilities; returns {template path: text}."""
    opts = {"name": name, "namespace": "prod", "kube_version": "v" + kube, "api_versions": list(apis)}
    if keda_crd:
        opts["api_versions"].append("keda.sh/v1alpha1")
    return json.loads(helm_python._native.call_string("helm_render", chart._raw(), json.dumps(values), json.dumps(opts)))


# Every load balancer object rendered by any scenario below, for the checks that must hold on
# all of them (health-check interval > timeout, a TLS 1.3 policy on HTTPS listeners).
RENDERED_LBS = []


def render(values, keda_crd=False, apis=(), name="rel", kube=KUBE):
    """Renders with the given capabilities; returns the parsed documents (NOTES excluded)."""
    out = render_raw(values, keda_crd, apis, name, kube)
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt") or not text.strip():
            continue
        for d in yaml.safe_load_all(text):
            if d:
                d["_template"] = path
                docs.append(d)
                if d["kind"] == "Ingress" or (d["kind"] == "Service" and d["spec"].get("type") == "LoadBalancer"):
                    RENDERED_LBS.append(d)
    return docs


def render_error(values, keda_crd=False, apis=(), name="rel", kube=KUBE):
    try:
        render(values, keda_crd, apis, name, kube)
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


WORKLOADS = ("Deployment", "StatefulSet")


def containers(docs):
    for d in docs:
        if d["kind"] in WORKLOADS:
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
        if svc["metadata"]["name"].endswith("-internal") and svc["spec"].get("type", "ClusterIP") != "ClusterIP":
            return False
        if svc["spec"].get("type", "ClusterIP") != "ClusterIP" and any(p.get("port") == 9090 for p in svc["spec"]["ports"]):
            return False
    return True


def pod_specs(docs):
    """{name: pod spec} of every Deployment, StatefulSet and Pod."""
    out = {}
    for d in docs:
        if d["kind"] in WORKLOADS:
            out[d["metadata"]["name"]] = d["spec"]["template"]["spec"]
        elif d["kind"] == "Pod":
            out[d["metadata"]["name"]] = d["spec"]
    return out


def env_of(docs):
    dep = [d for d in kinds(docs, "Deployment") if not d["metadata"]["name"].endswith("-gateway")][0]
    return {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}


def checksum(docs, name_suffix=""):
    for d in kinds(docs, "Deployment") + kinds(docs, "StatefulSet"):
        if d["metadata"]["name"].endswith(name_suffix or "socketless"):
            return d["spec"]["template"]["metadata"].get("annotations", {}).get("checksum/config")
    return None


# Every render needs a shared secret now: the chart no longer invents one.
BASE = {"config": {"region": "us-east-1"}, "sharedSecret": {"value": SECRET}}
ALB = {"ingress": {"enabled": True, "certificateArn": CERT}}

# 1. The 16 combinations of the four toggles.
for irsa, ingress, svc_type, keda in itertools.product([False, True], [False, True], ["ClusterIP", "NodePort"], [False, True]):
    label = f"irsa={irsa} ingress={ingress} service={svc_type} keda={keda}"
    values = merge(BASE, {
        "serviceAccount": {"irsa": {"roleArn": ROLE if irsa else ""}},
        "ingress": {"enabled": ingress, "certificateArn": CERT},
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
        ok &= a["alb.ingress.kubernetes.io/target-group-attributes"] == "deregistration_delay.timeout_seconds=30"
        ok &= a["alb.ingress.kubernetes.io/load-balancer-attributes"] == "idle_timeout.timeout_seconds=60"
        ok &= a["alb.ingress.kubernetes.io/listen-ports"] == '[{"HTTPS":443}]' and a["alb.ingress.kubernetes.io/certificate-arn"] == CERT
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
gw = [d for d in kinds(docs, "StatefulSet") if d["metadata"]["name"].endswith("-gateway")]
args = gw[0]["spec"]["template"]["spec"]["containers"][0]["args"] if gw else []
backend_env = {e["name"]: e.get("value") for e in [d for d in kinds(docs, "Deployment") if not d["metadata"]["name"].endswith("-gateway")][0]["spec"]["template"]["spec"]["containers"][0]["env"]}
probe = kinds(docs, "Pod")
check("gateway: StatefulSet, NodePort Service, its own Ingress, helm test probe through it",
      validate_all("gateway", docs) and gw and args[0] == "gateway"
      and "IntegrationUri=http://rel-socketless.prod.svc:8080" in args and "DisconnectContext=true" in args
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
                                    "extraTriggers": [{"type": "cron", "metadata": {"timezone": "UTC", "start": "0 8 * * *", "end": "0 18 * * *", "desiredReplicas": "4"}}]}}), keda_crd=True)
so = kinds(docs, "ScaledObject")[0]
types = [t["type"] for t in so["spec"]["triggers"]]
check("KEDA: cloudwatch, prometheus, cpu and custom triggers, role ARN on the TriggerAuthentication",
      validate_all("keda-all", docs) and types == ["aws-cloudwatch", "prometheus", "cpu", "cron"]
      and kinds(docs, "TriggerAuthentication")[0]["spec"]["podIdentity"]["roleArn"] == ROLE, json.dumps(types))
docs = render(merge(BASE, {"keda": {"enabled": True, "cloudwatch": {"apiId": "abc"}, "fallback": {"enabled": True}}}), keda_crd=True)
check("KEDA fallback renders with the cloudwatch trigger (no cpu trigger)",
      validate_all("keda-fallback", docs) and kinds(docs, "ScaledObject")[0]["spec"]["fallback"] == {"failureThreshold": 3, "replicas": 2})

docs = render(merge(BASE, {"sharedSecret": {"value": "", "existingSecret": "my-secret", "existingSecretKey": "token"}}))
env = env_of(docs)
check("shared secret from an existing Secret (none created)",
      not kinds(docs, "Secret") and env["SOCKETLESS_SHARED_SECRET"]["valueFrom"]["secretKeyRef"] == {"name": "my-secret", "key": "token"})
docs = render(BASE)
env = env_of(docs)
check("shared secret created from sharedSecret.value and wired into the env",
      kinds(docs, "Secret") and env["SOCKETLESS_SHARED_SECRET"]["valueFrom"]["secretKeyRef"]["name"] == kinds(docs, "Secret")[0]["metadata"]["name"]
      and kinds(docs, "Secret")[0]["data"]["shared-secret"] == __import__("base64").b64encode(SECRET.encode()).decode())
dep = kinds(docs, "Deployment")[0]["spec"]["template"]["spec"]
c = dep["containers"][0]
check("probes on /healthz and /readyz, topology spread",
      c["livenessProbe"]["httpGet"]["path"] == "/healthz" and c["readinessProbe"]["httpGet"]["path"] == "/readyz"
      and len(dep["topologySpreadConstraints"]) == 2)
check("every container is hardened", not hardened(docs), hardened(docs))
docs = render(merge(BASE, {"gateway": {"enabled": True}, "serviceAccount": {"irsa": {"roleArn": ROLE}}}))
check("no pod mounts a Kubernetes API token (IRSA mounts its own AWS token)",
      all(spec.get("automountServiceAccountToken") is False for spec in pod_specs(docs).values()) and len(pod_specs(docs)) == 3)

# The gateway on three replicas: a StatefulSet whose pods know their ordinal and every peer.
docs = render(merge(BASE, {"gateway": {"enabled": True, "replicaCount": 3, "stage": "dev"}, "config": {"replyMode": "async"},
                           "networkPolicy": {"enabled": True, "gatewayFrom": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}}))
sts = [d for d in kinds(docs, "StatefulSet") if d["metadata"]["name"] == "rel-socketless-gateway"]
headless = [s for s in kinds(docs, "Service") if s["spec"].get("clusterIP") == "None"]
svc_gw = [s for s in kinds(docs, "Service") if s["metadata"]["name"] == "rel-socketless-gateway"]
genv = {e["name"]: e for e in sts[0]["spec"]["template"]["spec"]["containers"][0]["env"]} if sts else {}
PEER_TEMPLATE = "http://rel-socketless-gateway-{ordinal}.rel-socketless-gateway-peers.prod.svc:8081"
gpdb = [p for p in kinds(docs, "PodDisruptionBudget") if p["metadata"]["name"].endswith("-gateway")]
gnp = [n for n in kinds(docs, "NetworkPolicy") if n["metadata"]["name"].endswith("-gateway")]
gfrom = gnp[0]["spec"]["ingress"][0]["from"] if gnp else []
check("gateway.replicaCount=3: a StatefulSet (Parallel) with a headless Service, ordinals from pod names, peers by name pattern",
      validate_all("scale-out", docs) and not [d for d in kinds(docs, "Deployment") if d["metadata"]["name"].endswith("-gateway")]
      and sts and sts[0]["spec"]["replicas"] == 3 and sts[0]["spec"]["podManagementPolicy"] == "Parallel"
      and headless and sts[0]["spec"]["serviceName"] == headless[0]["metadata"]["name"] == "rel-socketless-gateway-peers"
      and headless[0]["spec"]["publishNotReadyAddresses"] is True
      and genv["SOCKETLESS_GATEWAY_ORDINAL"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
      and genv.get("SOCKETLESS_GATEWAY_PEER_URL_TEMPLATE", {}).get("value") == PEER_TEMPLATE and "SOCKETLESS_GATEWAY_PEERS" not in genv
      and svc_gw and svc_gw[0]["spec"].get("clusterIP") != "None"
      and env_of(docs)["SOCKETLESS_PUSH_ENDPOINT"]["value"] == "http://rel-socketless-gateway.prod.svc:8081/dev"
      and gpdb and len(sts[0]["spec"]["template"]["spec"].get("topologySpreadConstraints", [])) == 2
      and any(f.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name") == "socketless-gateway" for f in gfrom)
      and any(f.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name") == "socketless" for f in gfrom),
      json.dumps(genv.get("SOCKETLESS_GATEWAY_PEER_URL_TEMPLATE")))
docs = render(merge(BASE, {"gateway": {"enabled": True}}))
sts = [d for d in kinds(docs, "StatefulSet") if d["metadata"]["name"] == "rel-socketless-gateway"]
genv = {e["name"]: e for e in sts[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
check("gateway.replicaCount=1: the same peer pattern and spread constraints as with more replicas",
      genv.get("SOCKETLESS_GATEWAY_PEER_URL_TEMPLATE", {}).get("value") == PEER_TEMPLATE
      and len(sts[0]["spec"]["template"]["spec"].get("topologySpreadConstraints", [])) == 2)

# Upstream mode: the team's app as a native sidecar of serve.
APP = {"app": {"enabled": True, "image": {"repository": "registry.example.com/chat-app", "tag": "1.4.2"}, "port": 3000,
               "env": [{"name": "APP_MODE", "value": "prod"}]}}
docs = render(merge(BASE, APP))
spec = kinds(docs, "Deployment")[0]["spec"]["template"]["spec"]
inits = spec.get("initContainers", [])
app = inits[0] if inits else {}
aenv = {e["name"]: e.get("value") for e in app.get("env", [])}
check("app: a native sidecar (restartPolicy Always) started before serve, with a startup probe; serve calls it on localhost",
      validate_all("app", docs) and len(inits) == 1 and app.get("restartPolicy") == "Always"
      and app["image"] == "registry.example.com/chat-app:1.4.2" and app["ports"][0]["containerPort"] == 3000
      and app["startupProbe"]["httpGet"]["path"] == "/healthz"
      and aenv.get("SOCKETLESS_INTERNAL_URL") == "http://127.0.0.1:9090" and aenv.get("APP_MODE") == "prod"
      and env_of(docs)["SOCKETLESS_UPSTREAM"]["value"] == "http://127.0.0.1:3000"
      and app.get("securityContext", {}).get("readOnlyRootFilesystem") is True,
      json.dumps(app)[:300])
check("no app: no init container, no SOCKETLESS_UPSTREAM",
      "initContainers" not in kinds(render(BASE), "Deployment")[0]["spec"]["template"]["spec"]
      and "SOCKETLESS_UPSTREAM" not in env_of(render(BASE)))
err = render_error(merge(BASE, {"app": {"enabled": True}}))
check("render fails: app without an image, saying what to set", err is not None and "app.image.repository" in err, err or "rendered")
check("checksum/config changes with the app", checksum(render(merge(BASE, APP))) != checksum(render(merge(BASE, merge(APP, {"app": {"port": 3001}})))))

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
    "keda.minReplicaCount 0 (no pod for $connect: scaling deadlocks)": {"keda": {"minReplicaCount": 0}},
    "readiness failureThreshold 1 (one slow probe pulls the pod)": {"probes": {"readiness": {"failureThreshold": 1}}},
    "metricStatPeriod 45 (CloudWatch takes 1, 5, 10, 30 or a multiple of 60)": {"keda": {"cloudwatch": {"metricStatPeriod": 45}}},
    "image digest without sha256:": {"image": {"digest": "abc123"}},
    "networkPolicy peer with an unknown key": {"networkPolicy": {"enabled": True, "internalFrom": [{"namespaceSelectr": {}}]}},
    "serviceMonitor interval not a duration": {"serviceMonitor": {"enabled": True, "interval": "often"}},
    "KEDA behavior with an unknown key": {"keda": {"behavior": {"scaleSideways": {}}}},
    "unknown podSecurityContext field": {"podSecurityContext": {"runAsUsr": 1}},
    "the removed sharedSecret.create": {"sharedSecret": {"create": True}},
}
# The shared secret's characters: what the binary accepts, at least 16.
for ch, why in [("'", "a quote breaks the stack's quoted literal"), (",", "a comma breaks SOCKETLESS_GATEWAY_PARAMS"),
                (" ", "space"), ('"', "double quote"), ("\\", "backslash"), ("`", "backtick")]:
    bad_values[f"sharedSecret.value with {why}"] = {"sharedSecret": {"value": "abcdefghijklmnop" + ch}}
bad_values["sharedSecret.value of 15 characters"] = {"sharedSecret": {"value": "a" * 15}}
for name, v in bad_values.items():
    try:
        chart.validate_schema(merge(BASE, v))
        check(f"schema rejects {name}", False, "accepted")
    except helm_python.HelmValuesError as e:
        check(f"schema rejects {name}", True)

# ...and by the template checks, with messages that say what to do.
fails = {
    "grace period too short": ({"terminationGracePeriodSeconds": 50}, False, "must exceed config.shutdownDelaySeconds + config.drainTimeoutSeconds + 5 s (= 50)"),
    "KEDA without its CRD": ({"keda": {"enabled": True, "cloudwatch": {"apiId": "abc"}}}, False, "install KEDA (its CRDs) first"),
    "KEDA and HPA together": ({"keda": {"enabled": True, "cloudwatch": {"apiId": "abc"}}, "autoscaling": {"enabled": True}}, True, "choose one owner"),
    "memory store with several replicas": ({"config": {"store": "memory"}}, False, "keeps sessions in one pod"),
}
for name, (v, crd, msg) in fails.items():
    err = render_error(merge(BASE, v), keda_crd=crd)
    check(f"render fails: {name}", err is not None and msg in err, err or "rendered")

allowed = "AZaz09!#$%&()*+-./:;<=>?@[]^_{|}~"
try:
    chart.validate_schema(merge(BASE, {"sharedSecret": {"value": allowed}}))
    check("schema accepts every allowed secret character", True)
except helm_python.HelmValuesError as e:
    check("schema accepts every allowed secret character", False, str(e))

# 3b. Production rules on EKS + ALB + KEDA + API Gateway. Each fails on the chart before them.
docs = render(BASE)
env = env_of(docs)
spec = kinds(docs, "Deployment")[0]["spec"]["template"]["spec"]
check("defaults: keep-alive 75s rendered as SOCKETLESS_KEEP_ALIVE_TIMEOUT (above the ALB's 60 s idle timeout)",
      env.get("SOCKETLESS_KEEP_ALIVE_TIMEOUT", {}).get("value") == "75s")
check("defaults: shutdown delay 15s covers the controller's lag, drain 30s covers the 29 s integration timeout",
      env["SOCKETLESS_SHUTDOWN_DELAY"]["value"] == "15s" and env["SOCKETLESS_DRAIN_TIMEOUT"]["value"] == "30s")
check("defaults: grace period 60 > 15 + 30 + 5", spec["terminationGracePeriodSeconds"] == 60)
check("defaults: readiness needs 3 misses", spec["containers"][0]["readinessProbe"]["failureThreshold"] == 3)

docs = render(merge(merge(BASE, ALB), {"ingress": {"deregistrationDelaySeconds": 30}, "config": {"shutdownDelaySeconds": 15}}))
check("ALB renders with a deregistration delay (30) above the shutdown delay (15): the old rule had it backwards",
      validate_all("alb-defaults", docs) and kinds(docs, "Ingress"))
timing_fails = {
    "keep-alive not above the ALB idle timeout": ({"config": {"keepAliveTimeoutSeconds": 60}}, "must exceed ingress.idleTimeoutSeconds (60)"),
    "keep-alive 30 s (the old backend) against a raised idle timeout": ({"config": {"keepAliveTimeoutSeconds": 75}, "ingress": {"idleTimeoutSeconds": 120}}, "must exceed ingress.idleTimeoutSeconds (120)"),
    "shutdown delay 5 s (the old default) shorter than the controller's lag": ({"config": {"shutdownDelaySeconds": 5}}, "is shorter than ingress.controllerLagSeconds (10)"),
    "deregistration delay 5 s (the old default) shorter than the drain": ({"ingress": {"deregistrationDelaySeconds": 5}}, "must be at least config.drainTimeoutSeconds (30)"),
    "internet-facing ALB without HTTPS carries the secret in plain text": ({"ingress": {"certificateArn": ""}}, "without HTTPS would carry the shared secret in plain text"),
}
for name, (v, msg) in timing_fails.items():
    err = render_error(merge(merge(BASE, ALB), v))
    check(f"render fails: {name}", err is not None and msg in err, err or "rendered")
docs = render(merge(BASE, {"ingress": {"enabled": True, "scheme": "internal", "certificateArn": ""}}))
check("an internal ALB may use plain HTTP (a VPC-internal hop)", bool(kinds(docs, "Ingress")))
docs = render(merge(BASE, {"ingress": {"enabled": True, "certificateArn": "", "allowPlainHttp": True}}))
check("allowPlainHttp is an explicit opt-out", bool(kinds(docs, "Ingress")))

text = render_raw(merge(BASE, merge(ALB, {"ingress": {"className": "alb-internal", "annotations": {
    "alb.ingress.kubernetes.io/healthcheck-interval-seconds": "10", "alb.ingress.kubernetes.io/group.name": "shared"}}})))
ing_text = next(t for p, t in text.items() if p.endswith("templates/ingress.yaml"))
ing = yaml.safe_load(ing_text)
check("ingress.annotations merged over the defaults: one key, the user's value",
      ing_text.count("alb.ingress.kubernetes.io/healthcheck-interval-seconds") == 1
      and ing["metadata"]["annotations"]["alb.ingress.kubernetes.io/healthcheck-interval-seconds"] == "10"
      and ing["metadata"]["annotations"]["alb.ingress.kubernetes.io/group.name"] == "shared"
      and ing["metadata"]["annotations"]["alb.ingress.kubernetes.io/target-type"] == "ip", ing_text)
check("ingressClassName from ingress.className", ing["spec"]["ingressClassName"] == "alb-internal")

# Shared secret: never generated.
err = render_error(merge(BASE, {"sharedSecret": {"value": ""}}))
check("render fails without a shared secret, showing how to create one",
      err is not None and "kubectl -n NAMESPACE create secret generic" in err and "--from-literal=shared-secret=$(openssl rand -hex 24)" in err, err or "rendered")
err = render_error(merge(BASE, {"sharedSecret": {"existingSecret": "s"}}))
check("render fails with both existingSecret and value", err is not None and "not both" in err, err or "rendered")
docs = render(merge(BASE, {"sharedSecret": {"enabled": False, "value": ""}}))
check("sharedSecret.enabled=false: no Secret, no secret in the backend's env",
      not kinds(docs, "Secret") and "SOCKETLESS_SHARED_SECRET" not in env_of(docs))
gw = {"gateway": {"enabled": True}}
a, b = render(merge(BASE, gw)), render(merge(BASE, gw))
c = render(merge(BASE, merge(gw, {"sharedSecret": {"value": SECRET + "x"}})))
check("two renders give the same Secret and checksum (nothing random)",
      kinds(a, "Secret") == kinds(b, "Secret") and checksum(a) and checksum(a) == checksum(b))
check("checksum/config changes with the secret, on the backend and the gateway pods",
      checksum(c) != checksum(a) and checksum(c, "-gateway") and checksum(c, "-gateway") != checksum(a, "-gateway"))
d = render(merge(BASE, {"config": {"logLevel": "debug"}}))
check("checksum/config changes with the settings", checksum(d) != checksum(render(BASE)))

# KEDA.
err = render_error(merge(BASE, {"keda": {"enabled": True}}), keda_crd=True)
check("render fails: KEDA cloudwatch with an empty apiId (it rendered dimensionValue \";prod\")",
      err is not None and "keda.cloudwatch.apiId is empty" in err, err or "rendered")
docs = render(merge(BASE, {"keda": {"enabled": True, "cloudwatch": {"apiId": "abc"},
                                    "behavior": {"scaleDown": {"stabilizationWindowSeconds": 600, "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}}}}), keda_crd=True)
so = kinds(docs, "ScaledObject")[0]
md = so["spec"]["triggers"][0]["metadata"]
check("KEDA cloudwatch reads complete minutes: metricEndTimeOffset 60, period 60, collection 300",
      md.get("metricEndTimeOffset") == "60" and md.get("metricStatPeriod") == "60" and md.get("metricCollectionTime") == "300", json.dumps(md))
check("KEDA behavior rendered as advanced.horizontalPodAutoscalerConfig.behavior",
      validate_all("keda-behavior", docs)
      and so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 600)
err = render_error(merge(BASE, {"keda": {"enabled": True, "cloudwatch": {"apiId": "abc", "metricCollectionTime": 90}}}), keda_crd=True)
check("render fails: metricCollectionTime not a multiple of metricStatPeriod", err is not None and "must be a multiple" in err, err or "rendered")

# Disruption budgets never block a drain.
for label, v in [("replicaCount 1", {"replicaCount": 1}), ("KEDA min 1", {"keda": {"enabled": True, "minReplicaCount": 1, "cloudwatch": {"apiId": "abc"}}}),
                 ("HPA min 1", {"autoscaling": {"enabled": True, "minReplicas": 1}})]:
    docs = render(merge(BASE, v), keda_crd=True)
    pdb = kinds(docs, "PodDisruptionBudget")[0]["spec"]
    check(f"PDB cannot block a node drain with {label}", pdb.get("maxUnavailable") == 1 and "minAvailable" not in pdb, json.dumps(pdb))
err = render_error(merge(BASE, {"replicaCount": 2, "podDisruptionBudget": {"minAvailable": 2, "maxUnavailable": None}}))
check("render fails: PDB minAvailable not below the replica count", err is not None and "node drains would block" in err, err or "rendered")
docs = render(merge(BASE, {"replicaCount": 3, "podDisruptionBudget": {"minAvailable": 2, "maxUnavailable": None}}))
check("PDB minAvailable below the replica count renders", kinds(docs, "PodDisruptionBudget")[0]["spec"].get("minAvailable") == 2)
docs = render(merge(BASE, {"gateway": {"enabled": True, "replicaCount": 1}}))
check("no gateway PDB with one gateway replica", not [p for p in kinds(docs, "PodDisruptionBudget") if p["metadata"]["name"].endswith("-gateway")])

# Security contexts, placement, volumes, image digest, priority class: on every pod.
osv = merge(BASE, {"gateway": {"enabled": True, "replicaCount": 2, "keepAliveTimeoutSeconds": 90, "priorityClassName": "edge",
                               "nodeSelector": {"pool": "edge"}, "tolerations": [{"key": "edge", "operator": "Exists", "effect": "NoSchedule"}],
                               "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "socketless-gateway"}}}}]}},
                               "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "socketless-gateway"}}}]},
                   "podSecurityContext": {"runAsUser": None, "runAsGroup": None, "fsGroup": None},
                   "containerSecurityContext": {"runAsUser": None, "runAsGroup": None},
                   "priorityClassName": "backend",
                   "image": {"digest": "sha256:" + "a" * 64, "tag": "9.9.9"},
                   "extraVolumes": [{"name": "ca", "configMap": {"name": "corp-ca"}}],
                   "extraVolumeMounts": [{"name": "ca", "mountPath": "/etc/corp-ca", "readOnly": True}]})
docs = render(osv)
specs = pod_specs(docs)
ok = validate_all("openshift", docs) and len(specs) == 3
for name, spec in specs.items():
    ok &= "runAsUser" not in spec.get("securityContext", {}) and spec["securityContext"].get("runAsNonRoot") is True
    for ctr in spec["containers"]:
        ok &= "runAsUser" not in ctr["securityContext"] and ctr["securityContext"]["readOnlyRootFilesystem"] is True
        ok &= ctr["image"] == "socketless@sha256:" + "a" * 64
check("security contexts overridable on every pod (backend, gateway, helm test); image digest wins over the tag", ok, json.dumps(specs)[:400])
be = specs["rel-socketless"]
gws = specs["rel-socketless-gateway"]
check("priorityClassName, extraVolumes and extraVolumeMounts on the backend",
      be.get("priorityClassName") == "backend" and be["volumes"][0]["name"] == "ca" and be["containers"][0]["volumeMounts"][0]["mountPath"] == "/etc/corp-ca")
gw_env = {e["name"]: e.get("value") for e in gws["containers"][0]["env"]}
gpdb = [p for p in kinds(docs, "PodDisruptionBudget") if p["metadata"]["name"].endswith("-gateway")]
check("gateway: placement, priority class, keep-alive env and a PDB with two replicas",
      gws.get("priorityClassName") == "edge" and gws["nodeSelector"] == {"pool": "edge"} and gws["tolerations"][0]["key"] == "edge"
      and "podAntiAffinity" in gws["affinity"] and gws["topologySpreadConstraints"][0]["maxSkew"] == 1
      and gw_env.get("SOCKETLESS_GATEWAY_KEEP_ALIVE_TIMEOUT") == "90s" and gpdb and gpdb[0]["spec"]["maxUnavailable"] == 1)

# ServiceMonitor and NetworkPolicy.
MON = "monitoring.coreos.com/v1/ServiceMonitor"
err = render_error(merge(BASE, {"serviceMonitor": {"enabled": True}}))
check("render fails: ServiceMonitor without the Prometheus Operator API, saying what to install",
      err is not None and "install the Prometheus Operator" in err, err or "rendered")
docs = render(merge(BASE, {"serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}}}), apis=[MON])
sm = kinds(docs, "ServiceMonitor")
internal = [s for s in kinds(docs, "Service") if s["metadata"]["name"].endswith("-internal")][0]
check("ServiceMonitor scrapes /metrics on the internal port of the internal Service only",
      sm and sm[0]["spec"]["endpoints"][0]["port"] == "internal" and sm[0]["spec"]["endpoints"][0]["path"] == "/metrics"
      and sm[0]["metadata"]["labels"]["release"] == "kube-prometheus-stack"
      and all(internal["metadata"]["labels"].get(k) == v for k, v in sm[0]["spec"]["selector"]["matchLabels"].items())
      and not any(all(s["metadata"]["labels"].get(k) == v for k, v in sm[0]["spec"]["selector"]["matchLabels"].items())
                  for s in kinds(docs, "Service") if s is not internal))
peer = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
docs = render(merge(BASE, {"gateway": {"enabled": True}, "networkPolicy": {"enabled": True, "internalFrom": [peer], "publicFrom": [{"ipBlock": {"cidr": "10.0.0.0/16"}}]}}))
np = kinds(docs, "NetworkPolicy")
rules = np[0]["spec"]["ingress"] if np else []
check("NetworkPolicy: internal port only from the chosen peers, public port from the chosen sources and the gateway",
      validate_all("netpol", docs) and len(rules) == 2
      and rules[0]["ports"][0]["port"] == "http" and rules[0]["from"][0] == {"ipBlock": {"cidr": "10.0.0.0/16"}}
      and rules[0]["from"][1]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "socketless-gateway"
      and rules[1]["ports"][0]["port"] == "internal" and rules[1]["from"] == [peer])
docs = render(merge(BASE, {"networkPolicy": {"enabled": True}}))
rules = kinds(docs, "NetworkPolicy")[0]["spec"]["ingress"]
check("NetworkPolicy defaults: public port from anywhere, internal port from no pod",
      len(rules) == 1 and rules[0]["ports"][0]["port"] == "http" and "from" not in rules[0])

# 3c. First contact with a real cluster: what ELBv2, the controllers, the webhook, KEDA and the
# kubelet refuse or get wrong. Each check fails on the chart before these rules.
def safe(label, fn):
    """Runs one group of checks; an exception (a render or schema error) fails it by name."""
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - a crash is a failed check, not a stopped run
        check(label, False, f"{type(e).__name__}: {str(e)[:300]}")


def ann(doc):
    return doc["metadata"].get("annotations", {}) or {}


def gateway_sts_text(values, name="rel"):
    out = render_raw(values, name=name)
    return next(t for p, t in out.items() if p.endswith("templates/gateway/statefulset.yaml"))


def notes(values, **kw):
    return next(t for p, t in render_raw(values, **kw).items() if p.endswith("NOTES.txt"))


GW = {"gateway": {"enabled": True}}
HC_I, HC_T = "alb.ingress.kubernetes.io/healthcheck-interval-seconds", "alb.ingress.kubernetes.io/healthcheck-timeout-seconds"
TLS13 = "ELBSecurityPolicy-TLS13-1-2-2021-06"
GW_ALB = merge(BASE, {"gateway": {"enabled": True, "ingress": {"enabled": True, "certificateArn": CERT, "host": "ws.example.com"}}})


def alb_checks():
    docs = render(merge(GW_ALB, ALB))
    ings = {i["metadata"]["name"]: ann(i) for i in kinds(docs, "Ingress")}
    be, gw = ings.get("rel-socketless", {}), ings.get("rel-socketless-gateway", {})
    check("ALB: both Ingresses render an explicit health-check interval (10) and timeout (5)",
          validate_all("alb-both", docs) and be.get(HC_I) == "10" and be.get(HC_T) == "5" and gw.get(HC_I) == "10" and gw.get(HC_T) == "5",
          json.dumps(ings)[:400])
    check("ALB: the gateway's Ingress checks /readyz on its port, expects 200, IP targets",
          gw.get("alb.ingress.kubernetes.io/healthcheck-path") == "/readyz" and gw.get("alb.ingress.kubernetes.io/healthcheck-port") == "traffic-port"
          and gw.get("alb.ingress.kubernetes.io/success-codes") == "200" and gw.get("alb.ingress.kubernetes.io/target-type") == "ip"
          and be.get("alb.ingress.kubernetes.io/success-codes") == "200", json.dumps(gw))
    check("ALB: the gateway's idle timeout (660 s) outlasts the gateway's own (10m), not the ALB's 60 s default",
          gw.get("alb.ingress.kubernetes.io/load-balancer-attributes") == "idle_timeout.timeout_seconds=660", json.dumps(gw))
    check("ALB: a TLS 1.3 security policy on the HTTPS listeners of both Ingresses",
          be.get("alb.ingress.kubernetes.io/ssl-policy") == TLS13 and gw.get("alb.ingress.kubernetes.io/ssl-policy") == TLS13)
    # The user's annotations are merged over the chart's: the merged result is what is checked.
    for where, v in [("ingress", {"ingress": {"annotations": {HC_I: "5"}}}),
                     ("gateway.ingress", {"gateway": {"ingress": {"annotations": {HC_T: "10"}}}})]:
        err = render_error(merge(merge(GW_ALB, ALB), v))
        check(f"render fails: {where} annotations that make the interval not greater than the timeout (ELBv2 refuses)",
              err is not None and "must be greater than its timeout" in err, err or "rendered")
    err = render_error(merge(GW_ALB, {"ingress": {"enabled": True, "certificateArn": CERT, "healthCheck": {"intervalSeconds": 5, "timeoutSeconds": 5}}}))
    check("render fails: ingress.healthCheck interval 5 = timeout 5", err is not None and "must be greater than its timeout" in err, err or "rendered")
    err = render_error(merge(GW_ALB, {"gateway": {"idleTimeout": "1h"}}))
    check("render fails: the gateway's ALB idle timeout (660 s) below gateway.idleTimeout (1h)",
          err is not None and "must exceed gateway.idleTimeout (1h = 3600 s)" in err, err or "rendered")
    docs = render(merge(GW_ALB, {"gateway": {"idleTimeout": "1h", "ingress": {"idleTimeoutSeconds": 3700}}}))
    check("gateway.idleTimeout 1h renders with an ALB idle timeout of 3700 s",
          ann([i for i in kinds(docs, "Ingress") if i["metadata"]["name"].endswith("-gateway")][0])["alb.ingress.kubernetes.io/load-balancer-attributes"] == "idle_timeout.timeout_seconds=3700")
    def gw_keep_alive(values):
        sts = [s for s in kinds(render(values), "StatefulSet")][0]
        env = {e["name"]: e.get("value") for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]}
        return env.get("SOCKETLESS_GATEWAY_KEEP_ALIVE_TIMEOUT")
    check("the gateway's keep-alive outlives its ALB's idle timeout (660 s + 15), 75 s without the Ingress",
          gw_keep_alive(GW_ALB) == "675s" and gw_keep_alive(merge(BASE, GW)) == "75s",
          f"{gw_keep_alive(GW_ALB)} / {gw_keep_alive(merge(BASE, GW))}")
    docs = render(merge(BASE, {"ingress": {"enabled": True, "scheme": "internal", "certificateArn": ""}}))
    check("no HTTPS listener: no ssl-policy", "alb.ingress.kubernetes.io/ssl-policy" not in ann(kinds(docs, "Ingress")[0]))
    docs = render(merge(merge(BASE, ALB), {"ingress": {"annotations": {"alb.ingress.kubernetes.io/ssl-policy": "ELBSecurityPolicy-TLS13-1-3-2021-06"}}}))
    check("the user's ssl-policy annotation wins, once", ann(kinds(docs, "Ingress")[0])["alb.ingress.kubernetes.io/ssl-policy"] == "ELBSecurityPolicy-TLS13-1-3-2021-06")


def app_checks():
    APP2 = {"app": {"enabled": True, "image": {"repository": "registry.example.com/chat-app", "tag": "1.4.2"}}}
    docs = render(merge(BASE, APP2))
    dep = kinds(docs, "Deployment")[0]
    spec = dep["spec"]["template"]["spec"]
    aenv = {e["name"]: e for e in spec["initContainers"][0]["env"]}
    check("app sidecar: HOST=0.0.0.0 (kubelet probes the pod IP) and PORT",
          aenv.get("HOST", {}).get("value") == "0.0.0.0" and aenv.get("PORT", {}).get("value") == "3000", json.dumps(list(aenv)))
    check("app sidecar: the pod identity webhook skips it (eks.amazonaws.com/skip-containers: app)",
          dep["spec"]["template"]["metadata"]["annotations"].get("eks.amazonaws.com/skip-containers") == "app")
    docs = render(merge(BASE, merge(APP2, {"podAnnotations": {"eks.amazonaws.com/skip-containers": "debug", "team": "chat"}})))
    pa = kinds(docs, "Deployment")[0]["spec"]["template"]["metadata"]["annotations"]
    check("skip-containers merged with the user's podAnnotations (one key, both names)",
          pa.get("eks.amazonaws.com/skip-containers") == "debug,app" and pa.get("team") == "chat", json.dumps(pa))
    check("no app: no skip-containers annotation",
          "eks.amazonaws.com/skip-containers" not in kinds(render(BASE), "Deployment")[0]["spec"]["template"]["metadata"]["annotations"])
    err = render_error(merge(BASE, APP2), kube="1.28.5")
    check("render fails: the app sidecar on Kubernetes 1.28 (native sidecars need 1.29)",
          err is not None and "needs Kubernetes 1.29 or later" in err, err or "rendered")
    check("the app sidecar renders on Kubernetes 1.29", render_error(merge(BASE, APP2), kube="1.29.0") is None)
    check("no app: renders on Kubernetes 1.28", render_error(BASE, kube="1.28.5") is None)


NLB = "service.beta.kubernetes.io/aws-load-balancer-"


def nlb_checks():
    docs = render(merge(BASE, {"service": {"type": "LoadBalancer"}}))
    svc = [s for s in kinds(docs, "Service") if s["spec"]["type"] == "LoadBalancer"][0]
    a = ann(svc)
    check("NLB: HTTP health check on /readyz at the internal port 9090, IP targets, interval 10 > timeout 5",
          a.get(NLB + "healthcheck-protocol") == "http" and a.get(NLB + "healthcheck-path") == "/readyz"
          and a.get(NLB + "healthcheck-port") == "9090" and a.get(NLB + "nlb-target-type") == "ip"
          and a.get(NLB + "healthcheck-interval") == "10" and a.get(NLB + "healthcheck-timeout") == "5", json.dumps(a))
    check("NLB: security groups not evaluated on PrivateLink traffic (the VPC link), deregistration delay 30",
          a.get(NLB + "inbound-sg-rules-on-private-link-traffic") == "off"
          and a.get(NLB + "target-group-attributes") == "deregistration_delay.timeout_seconds=30", json.dumps(a))
    text = notes(merge(BASE, {"service": {"type": "LoadBalancer"}}))
    check("NOTES: the VPC link's IntegrationUri carries the Service's port (http://<NLB hostname>:8080)",
          "IntegrationUri=http://<NLB hostname>:8080" in text and "VpcLinkTargetArn" in text, text)
    text = notes(merge(BASE, {"service": {"type": "LoadBalancer", "port": 8443}}))
    check("NOTES: the IntegrationUri follows service.port", "IntegrationUri=http://<NLB hostname>:8443" in text)
    for name, v, msg in [
        ("shutdown delay below the NLB controller's lag", {"config": {"shutdownDelaySeconds": 5}}, "is shorter than service.loadBalancer.controllerLagSeconds (10)"),
        ("NLB deregistration delay below the drain", {"service": {"loadBalancer": {"deregistrationDelaySeconds": 5}}}, "must be at least config.drainTimeoutSeconds (30)"),
        ("NLB annotations that make the interval not greater than the timeout", {"service": {"annotations": {NLB + "healthcheck-interval": "5"}}}, "must be greater than its timeout"),
    ]:
        err = render_error(merge(BASE, merge({"service": {"type": "LoadBalancer"}}, v)))
        check(f"render fails: {name}", err is not None and msg in err, err or "rendered")


def gateway_memory_checks():
    """The gateway's memory budgets against its limit: the chart's formula is the binary's."""
    with open(os.path.join(ROOT, "src", "defaults.rs")) as f:
        rust = f.read()

    def const(name):
        m = re.search(rf"pub const {name}: [^=]+= (.+);", rust)
        return m and m.group(1).strip().strip('"')
    g = yaml.safe_load(open(os.path.join(CHART_DIR, "values.yaml")))["gateway"]
    mem = g["memory"]
    check("gateway.memory defaults are the binary's (src/defaults.rs)",
          str(mem["maxPendingMessageBytes"]) == const("MAX_PENDING_MESSAGE_BYTES") and str(mem["maxOutboundBytes"]) == const("MAX_OUTBOUND_BYTES")
          and str(mem["maxBufferedBodyBytes"]) == const("MAX_BUFFERED_BODY_BYTES") and mem["messageTimeout"] == const("MESSAGE_TIMEOUT")
          and str(g["maxConnections"]) == const("MAX_CONNECTIONS"), json.dumps(mem))
    check("the chart's formula uses the binary's baseline (10 MiB) and per-connection figure (32 KiB)",
          const("GATEWAY_BASELINE_MIB") == "10" and const("GATEWAY_PER_CONNECTION_BYTES") == "32 * 1024"
          and const("CHART_GATEWAY_MEMORY_MIB") == "512" and g["resources"]["limits"]["memory"] == "512Mi")
    docs = render(merge(BASE, GW))
    env = {e["name"]: e.get("value") for e in kinds(docs, "StatefulSet")[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    check("the gateway gets its memory budgets as SOCKETLESS_GATEWAY_* variables",
          env.get("SOCKETLESS_GATEWAY_MAX_PENDING_MESSAGE_BYTES") == "33554432" and env.get("SOCKETLESS_GATEWAY_MAX_OUTBOUND_BYTES") == "33554432"
          and env.get("SOCKETLESS_GATEWAY_MAX_BUFFERED_BODY_BYTES") == "67108864" and env.get("SOCKETLESS_GATEWAY_MESSAGE_TIMEOUT") == "10s",
          json.dumps(env))
    check("gateway.binaryFrames off by default: no SOCKETLESS_GATEWAY_BINARY_FRAMES (1003 on a binary frame)",
          "SOCKETLESS_GATEWAY_BINARY_FRAMES" not in env and g["binaryFrames"] is False, json.dumps(env))
    binary = render(merge(BASE, merge(GW, {"gateway": {"binaryFrames": True}})))
    benv = {e["name"]: e.get("value") for e in kinds(binary, "StatefulSet")[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    check("gateway.binaryFrames=true sets SOCKETLESS_GATEWAY_BINARY_FRAMES=true",
          benv.get("SOCKETLESS_GATEWAY_BINARY_FRAMES") == "true", json.dumps(benv))
    err = render_error(merge(BASE, {"gateway": {"enabled": True, "binaryFrames": "yes"}}))
    check("the schema refuses a gateway.binaryFrames that is not a boolean", err is not None and "binaryFrames" in err,
          err or "rendered")
    err = render_error(merge(BASE, {"gateway": {"enabled": True, "maxConnections": 20000}}))
    check("render fails: 20,000 connections × 32 KiB + the budgets do not fit 512Mi, naming the values and the limit to set",
          err is not None and "gateway.maxConnections (20000)" in err and "at least 848 Mi" in err, err or "rendered")
    ok = render_error(merge(BASE, {"gateway": {"enabled": True, "maxConnections": 20000, "resources": {"limits": {"memory": "1Gi"}}}}))
    check("20,000 connections fit a 1Gi limit", ok is None, ok or "")
    err = render_error(merge(BASE, {"gateway": {"enabled": True, "memory": {"maxOutboundBytes": 268435456}}}))
    check("render fails: a 256 MiB outbound budget does not fit 512Mi", err is not None and "maxOutboundBytes (268435456)" in err, err or "rendered")
    err = render_error(merge(BASE, {"gateway": {"enabled": True, "resources": {"limits": {"memory": "0.5Gi"}}}}))
    check("render fails: a memory limit the chart cannot read", err is not None and "write it as bytes" in err, err or "rendered")
    ok = render_error(merge(BASE, {"gateway": {"enabled": True, "resources": {"limits": {"memory": 1073741824}}}}))
    check("a memory limit in plain bytes is read", ok is None, ok or "")
    ok = render_error(merge(BASE, {"gateway": {"enabled": True, "resources": {"limits": {"memory": None}}}}))
    check("no memory limit: no check", ok is None, ok or "")


def gateway_checks():
    texts = {n: gateway_sts_text(merge(BASE, {"gateway": {"enabled": True, "replicaCount": n}})) for n in (1, 2, 3, 5)}
    bodies = {n: t.replace(f"\n  replicas: {n}\n", "\n  replicas: N\n") for n, t in texts.items()}
    check("gateway StatefulSet: byte-identical for replicaCount 1, 2, 3, 5 but for spec.replicas",
          len(set(bodies.values())) == 1 and all(f"\n  replicas: {n}\n" in texts[n] for n in texts))
    docs = render(merge(BASE, {"gateway": {"enabled": True, "replicaCount": 2}}))
    sts = kinds(docs, "StatefulSet")[0]
    c = sts["spec"]["template"]["spec"]["containers"][0]
    genv = {e["name"]: e for e in c["env"]}
    check("gateway: no peer list, no secret in argv; SharedSecret from the Secret as SOCKETLESS_GATEWAY_PARAM_SharedSecret",
          "SOCKETLESS_GATEWAY_PEERS" not in genv and not any("SharedSecret" in a for a in c["args"])
          and genv.get("SOCKETLESS_GATEWAY_PARAM_SharedSecret", {}).get("valueFrom", {}).get("secretKeyRef") == {"name": "rel-socketless-shared-secret", "key": "shared-secret"}
          and sts["spec"]["podManagementPolicy"] == "Parallel", json.dumps(c["args"]))
    check("gateway liveness: timeoutSeconds 5, failureThreshold 6", c["livenessProbe"].get("timeoutSeconds") == 5 and c["livenessProbe"].get("failureThreshold") == 6)
    docs = render(merge(BASE, {"gateway": {"enabled": True}, "sharedSecret": {"enabled": False, "value": ""}}))
    genv = {e["name"]: e for e in kinds(docs, "StatefulSet")[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    check("gateway without a shared secret: a placeholder parameter, no Secret", genv.get("SOCKETLESS_GATEWAY_PARAM_SharedSecret", {}).get("value") == "not-checked-by-the-backend")


def checksum_checks():
    base = merge(BASE, {"gateway": {"enabled": True, "replicaCount": 2}})
    APP2 = {"app": {"enabled": True, "image": {"repository": "registry.example.com/chat-app", "tag": "1.4.2"}}}
    ref = gateway_sts_text(merge(base, APP2))
    for name, v in [("config.sessionTtl", {"config": {"sessionTtl": "4h"}}), ("app.image.tag", {"app": {"image": {"tag": "1.4.3"}}}),
                    ("config.logLevel", {"config": {"logLevel": "debug"}}), ("extraEnv", {"extraEnv": [{"name": "X", "value": "1"}]}),
                    ("internalApi.token.value", {"internalApi": {"token": {"value": "internal-token-0123456789"}}}),
                    ("gateway.replicaCount (checksum)", {"gateway": {"replicaCount": 2}})]:
        check(f"changing {name} changes no byte of the gateway StatefulSet", gateway_sts_text(merge(merge(base, APP2), v)) == ref)
    # Enabling the gateway's Ingress raises its keep-alive (read at start); its host and
    # annotations are the load balancer's business and roll nothing.
    with_alb = merge(base, {"gateway": {"ingress": {"enabled": True, "host": "ws.example.com"}}})
    check("changing gateway.ingress.host and its annotations changes no byte of the gateway StatefulSet",
          gateway_sts_text(with_alb) == gateway_sts_text(merge(with_alb, {"gateway": {"ingress": {"host": "other.example.com", "annotations": {"a": "b"}}}})))
    bref = checksum(render(merge(base, APP2)))
    for name, v in [("config.sessionTtl", {"config": {"sessionTtl": "4h"}}), ("app.image.tag", {"app": {"image": {"tag": "1.4.3"}}}),
                    ("the internal token", {"internalApi": {"token": {"value": "internal-token-0123456789"}}}),
                    ("the shared secret", {"sharedSecret": {"value": SECRET + "x"}})]:
        check(f"the backend's checksum changes with {name}", checksum(render(merge(merge(base, APP2), v))) != bref)
    gref = checksum(render(base), "-gateway")
    for name, v in [("the shared secret", {"sharedSecret": {"value": SECRET + "x"}}), ("config.logFormat", {"config": {"logFormat": "text"}}),
                    ("service.port (its IntegrationUri)", {"service": {"port": 8088}}), ("gateway.idleTimeout", {"gateway": {"idleTimeout": "5m"}}),
                    ("sharedSecret.existingSecret", {"sharedSecret": {"value": "", "existingSecret": "other"}})]:
        check(f"the gateway's checksum changes with {name}", checksum(render(merge(base, v)), "-gateway") != gref)


def token_checks():
    docs = render(merge(BASE, {"app": {"enabled": True, "image": {"repository": "r/app"}}}))
    spec = kinds(docs, "Deployment")[0]["spec"]["template"]["spec"]
    serve = {e["name"]: e for e in spec["containers"][0]["env"]}
    app = {e["name"]: e for e in spec["initContainers"][0]["env"]}
    want = {"name": "rel-socketless-shared-secret", "key": "shared-secret"}
    check("internal token: by default the shared secret's Secret and key, on serve and the app sidecar",
          serve.get("SOCKETLESS_INTERNAL_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef") == want
          and app.get("SOCKETLESS_INTERNAL_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef") == want)
    docs = render(merge(BASE, {"internalApi": {"token": {"value": "internal-token-0123456789"}}}))
    sec = [s for s in kinds(docs, "Secret") if s["metadata"]["name"] == "rel-socketless-internal-token"]
    check("internal token from internalApi.token.value: its own Secret",
          sec and sec[0]["data"]["internal-token"] == __import__("base64").b64encode(b"internal-token-0123456789").decode()
          and env_of(docs)["SOCKETLESS_INTERNAL_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "rel-socketless-internal-token", "key": "internal-token"})
    docs = render(merge(BASE, {"internalApi": {"token": {"existingSecret": "tok", "existingSecretKey": "t"}}}))
    check("internal token from an existing Secret", env_of(docs)["SOCKETLESS_INTERNAL_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "tok", "key": "t"}
          and not [s for s in kinds(docs, "Secret") if "internal" in s["metadata"]["name"]])
    docs = render(merge(BASE, {"sharedSecret": {"enabled": False, "value": ""}}))
    check("no shared secret and no token: no SOCKETLESS_INTERNAL_TOKEN", "SOCKETLESS_INTERNAL_TOKEN" not in env_of(docs))
    err = render_error(merge(BASE, {"internalApi": {"token": {"existingSecret": "tok", "value": "internal-token-0123456789"}}}))
    check("render fails: internal token with existingSecret and value", err is not None and "not both" in err, err or "rendered")


def misc_checks():
    MON = "monitoring.coreos.com/v1/ServiceMonitor"
    err = render_error(merge(BASE, {"serviceMonitor": {"enabled": True}, "networkPolicy": {"enabled": True}}), apis=[MON])
    check("render fails: NetworkPolicy + ServiceMonitor with an empty internalFrom, saying to add Prometheus",
          err is not None and "Add the Prometheus namespace or pods to networkPolicy.internalFrom" in err, err or "rendered")
    err = render_error(merge(BASE, {"keda": {"enabled": True, "cloudwatch": {"apiId": "abc", "identityOwner": "workload"}}}), keda_crd=True)
    check("render fails: KEDA identityOwner workload (the backend's role has no cloudwatch:GetMetricData)",
          err is not None and "KedaRoleArn" in err and "cloudwatch:GetMetricData" in err, err or "rendered")
    err = render_error(merge(BASE, {"keda": {"enabled": True, "cloudwatch": {"apiId": "abc"}, "minReplicaCount": 5, "maxReplicaCount": 3}}), keda_crd=True)
    check("render fails: KEDA minReplicaCount > maxReplicaCount", err is not None and "greater than keda.maxReplicaCount" in err, err or "rendered")
    err = render_error(merge(BASE, {"keda": {"enabled": True, "cloudwatch": {"apiId": "abc"}, "cpu": {"enabled": True}, "fallback": {"enabled": True}}}), keda_crd=True)
    check("render fails: KEDA fallback with the cpu trigger", err is not None and "KEDA refuses a fallback" in err, err or "rendered")
    for label, pdb, msg in [("maxUnavailable 0", {"maxUnavailable": 0}, "maxUnavailable is 0"),
                            ('maxUnavailable "0%"', {"maxUnavailable": "0%"}, "maxUnavailable is 0%"),
                            ('minAvailable "100%"', {"maxUnavailable": None, "minAvailable": "100%"}, "minAvailable is 100%")]:
        err = render_error(merge(BASE, {"podDisruptionBudget": pdb}))
        check(f"render fails: PDB {label} (no eviction ever)", err is not None and msg in err, err or "rendered")
    err = render_error(merge(BASE, {"gateway": {"enabled": True, "replicaCount": 2, "podDisruptionBudget": {"maxUnavailable": 0}}}))
    check("render fails: gateway PDB maxUnavailable 0", err is not None and "gateway.podDisruptionBudget.maxUnavailable is 0" in err, err or "rendered")
    long_name = "a" * 34  # + "-socketless-gateway" = 53 characters
    err = render_error(merge(BASE, GW), name=long_name)
    check("render fails: a release name that makes the StatefulSet name longer than 52 characters",
          err is not None and "more than 52" in err, err or "rendered")
    check("a 52-character StatefulSet name renders", render_error(merge(BASE, GW), name="a" * 33) is None)
    # The helm test pod is no endpoint of any Service.
    docs = render(merge(BASE, GW))
    pod = kinds(docs, "Pod")[0]
    labels = pod["metadata"]["labels"]
    hit = [s["metadata"]["name"] for s in kinds(docs, "Service") if all(labels.get(k) == v for k, v in s["spec"]["selector"].items())]
    check("the helm test pod matches no Service's selector (backend, internal, gateway, peers)", not hit and kinds(docs, "Service"), json.dumps(hit))
    text = notes(BASE)
    check("NOTES: no helm test promised when none renders", "helm test" not in text.replace("No helm test is rendered", ""), text)
    check("NOTES: helm test offered when the gateway renders one", "helm test rel" in notes(merge(BASE, GW)))
    text = notes(merge(BASE, ALB))
    check("NOTES: label the namespace for the readiness gate BEFORE installing",
          "BEFORE installing" in text and "elbv2.k8s.aws/pod-readiness-gate-inject=enabled" in text, text)


for label, fn in [("ALB checks", alb_checks), ("app sidecar checks", app_checks), ("NLB checks", nlb_checks),
                  ("gateway checks", gateway_checks), ("gateway memory checks", gateway_memory_checks), ("checksum checks", checksum_checks), ("internal token checks", token_checks),
                  ("smaller checks", misc_checks)]:
    safe(label, fn)

# 4. Example values files render and validate.
for example in sorted(os.listdir(os.path.join(CHART_DIR, "examples"))):
    with open(os.path.join(CHART_DIR, "examples", example)) as f:
        v = yaml.safe_load(f)
    docs = render(v, keda_crd=True)
    check(f"example {example} renders and validates", validate_all(example, docs) and not hardened(docs) and internal_never_exposed(docs))
    if example.startswith("eks"):
        ing = kinds(docs, "Ingress")[0]["metadata"]["annotations"]
        public = [s for s in kinds(docs, "Service") if not s["metadata"]["name"].endswith("-internal")][0]
        check("EKS example: ClusterIP Service for IP targets, HTTPS-only listener, the secret from an existing Secret",
              public["spec"]["type"] == "ClusterIP" and ing["alb.ingress.kubernetes.io/target-type"] == "ip"
              and ing.get("alb.ingress.kubernetes.io/listen-ports") == '[{"HTTPS":443}]' and not kinds(docs, "Secret"))

# 4b. What ci/e2e/kind-e2e.sh installs: the kind example with ci/fixtures/kind/values.yaml over it, and the
# DynamoDB manifests it applies (either one serves dynamodb.dynamodb.svc:8000).
KIND_DIR = os.path.join(ROOT, "ci", "fixtures", "kind")
with open(os.path.join(CHART_DIR, "examples", "kind-nodeport-gateway.yaml")) as f:
    kind_values = yaml.safe_load(f)
with open(os.path.join(KIND_DIR, "values.yaml")) as f:
    kind_values = merge(kind_values, yaml.safe_load(f))
kind_values = merge(kind_values, {"image": {"repository": "socketless", "tag": "e2e", "pullPolicy": "Never"}})
docs = render(kind_values, keda_crd=True)
gw = [d for d in kinds(docs, "StatefulSet") if d["metadata"]["name"].endswith("-gateway")]
be = [d for d in kinds(docs, "Deployment") if not d["metadata"]["name"].endswith("-gateway")]
env = env_of(docs)
so = kinds(docs, "ScaledObject")
trig = so[0]["spec"]["triggers"] if so else []
check("kind e2e values render and validate: 2 gateways, async replies, DynamoDB at dynamodb.dynamodb.svc:8000",
      validate_all("kind-e2e", docs) and not hardened(docs) and gw and gw[0]["spec"].get("replicas") == 2
      and env["SOCKETLESS_REPLY_MODE"].get("value") == "async"
      and env["SOCKETLESS_DYNAMODB_ENDPOINT"].get("value") == "http://dynamodb.dynamodb.svc:8000"
      and any(s["metadata"]["name"].endswith("-gateway") and s["spec"]["type"] == "NodePort"
              and s["spec"]["ports"][0].get("nodePort") == 30081 for s in kinds(docs, "Service")),
      json.dumps({"gateway": gw[0]["spec"].get("replicas") if gw else None}))
check("kind e2e values: KEDA owns the backend's replicas with a cron trigger only (no cloud access)",
      so and "replicas" not in be[0]["spec"] and [t["type"] for t in trig] == ["cron"]
      and trig[0]["metadata"]["desiredReplicas"] == "3" and so[0]["spec"]["minReplicaCount"] == 1
      and not kinds(docs, "TriggerAuthentication") and not kinds(docs, "HorizontalPodAutoscaler"), json.dumps(trig))
for manifest in ("dynamodb-local.yaml", "localstack.yaml"):
    with open(os.path.join(KIND_DIR, manifest)) as f:
        mdocs = [d for d in yaml.safe_load_all(f) if d]
    ok = True
    for d in mdocs:
        try:
            kubernetes_validate.validate(d, KUBE, strict=True)
        except Exception as e:  # noqa: BLE001 - any validation failure is a test failure
            ok = False
            print(f"   {manifest}: {d['kind']}/{d['metadata']['name']} invalid: {e}")
    dep = [d for d in mdocs if d["kind"] == "Deployment"]
    svc = [d for d in mdocs if d["kind"] == "Service"]
    ctr = dep[0]["spec"]["template"]["spec"]["containers"][0] if dep else {}
    tag = ctr.get("image", "").rpartition(":")[2]
    check(f"ci/fixtures/kind/{manifest}: valid, a pinned image, a readiness probe, Service dynamodb.dynamodb:8000",
          ok and dep and svc and "readinessProbe" in ctr and tag and tag[0].isdigit()
          and svc[0]["metadata"]["name"] == "dynamodb" and svc[0]["metadata"]["namespace"] == "dynamodb"
          and svc[0]["spec"]["ports"][0]["port"] == 8000, ctr.get("image", ""))

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

# Every Ingress and NLB Service rendered above (every scenario): the merged annotations have a
# health-check interval greater than the timeout, and HTTPS listeners a TLS 1.3 policy.
bad = []
for d in RENDERED_LBS:
    a = ann(d)
    if d["kind"] == "Ingress":
        i, t = a.get(HC_I), a.get(HC_T)
        https = a.get("alb.ingress.kubernetes.io/certificate-arn") or "HTTPS" in a.get("alb.ingress.kubernetes.io/listen-ports", "")
        if https and not a.get("alb.ingress.kubernetes.io/ssl-policy", "").startswith("ELBSecurityPolicy-TLS13-"):
            bad.append(f"{d['metadata']['name']}: no TLS 1.3 policy")
    else:
        i, t = a.get(NLB + "healthcheck-interval"), a.get(NLB + "healthcheck-timeout")
    if not (i and t and int(i) > int(t)):
        bad.append(f"{d['kind']}/{d['metadata']['name']}: interval {i}, timeout {t}")
check(f"every Ingress and NLB rendered ({len(RENDERED_LBS)}): health-check interval > timeout, TLS 1.3 on HTTPS", RENDERED_LBS and not bad, json.dumps(bad[:5]))

TALLY.finish()
