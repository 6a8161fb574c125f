"""The pod twin: runs a Helm chart's rendered manifests the way a kubelet, kube-proxy, the
workload controllers and the AWS Load Balancer Controller would, on one Linux host, without a
container runtime. Each pod is a network namespace on a private bridge with its own IP; each
container is a process in it (the manifest's command, args, env and uid); probes come from the
host; Services are userspace proxies on their ClusterIPs (and 127.0.0.1:nodePort); an Ingress of
class alb gets an ALB twin on 127.0.0.1. docs/podtwin.md says what it shows and what it cannot.

Needs root (ip netns). Everything it creates is named with the prefix `ptw` and removed on exit.
"""
import asyncio
import base64
import copy
import hashlib
import json
import os
import random
import re
import shutil
import signal
import string
import subprocess
import time

import yaml

PREFIX = "ptw"
BRIDGE = "ptw0"
NET = "10.213.7"  # the twin's private /24: .1 the host, .10-.199 pods, .200-.254 ClusterIPs
HOST_IP = f"{NET}.1"
NETNS_ETC = "/etc/netns"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sh(*argv, check=True):
    r = subprocess.run(argv, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {r.stderr.strip()}")
    return r.stdout


# ---------------------------------------------------------------------------------------------
# Rendering


def merge(base, extra):
    out = copy.deepcopy(base)
    for k, v in (extra or {}).items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def set_path(values, dotted, value):
    """--set-like: set_path(v, "gateway.replicaCount", 3)."""
    keys = dotted.split(".")
    cur = values
    for k in keys[:-1]:
        cur = cur.setdefault(k, {})
    cur[keys[-1]] = value


def render(chart_dir, values_files=(), values=None, sets=None, name="socketless", namespace="socketless",
           kube_version="v1.31.0"):
    """Renders the chart as ci/static/render-chart.py does; returns the list of manifests."""
    import helm_python
    from helm_python import Chart

    merged = {}
    for path in values_files:
        with open(path) as f:
            merged = merge(merged, yaml.safe_load(f) or {})
    merged = merge(merged, values or {})
    for k, v in (sets or {}).items():
        set_path(merged, k, v)
    chart = Chart.load(chart_dir)
    opts = {"name": name, "namespace": namespace, "kube_version": kube_version,
            "api_versions": ["keda.sh/v1alpha1"]}
    rendered = json.loads(helm_python._native.call_string("helm_render", chart._raw(), json.dumps(merged),
                                                          json.dumps(opts)))
    docs = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt") or "/tests/" in path or not text.strip():
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


# ---------------------------------------------------------------------------------------------
# Helpers


def template_hash(template):
    """A controller's view of a pod template: any byte change is a new revision."""
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


def expand(text, env):
    """Kubernetes $(VAR) expansion: known variables are replaced, $$ escapes, others stay."""
    def sub(m):
        if m.group(0).startswith("$$"):
            return m.group(0)[1:]
        return env.get(m.group(1), m.group(0))
    return re.sub(r"\$\$\([A-Za-z_][A-Za-z0-9_]*\)|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", sub, str(text))


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def intorpct(v, total, round_up):
    if isinstance(v, str) and v.endswith("%"):
        x = int(v[:-1]) * total / 100
        return int(-(-x // 1)) if round_up else int(x // 1)
    return int(v)


class TwinError(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# Probes (from the host, as a kubelet probes)


async def http_probe(host, port, path, timeout, codes=range(200, 400)):
    async def go():
        r, w = await asyncio.open_connection(host, port)
        try:
            w.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.31\r\n"
                    f"Connection: close\r\n\r\n".encode())
            await w.drain()
            line = await r.readline()
            parts = line.split()
            return len(parts) >= 2 and int(parts[1]) in codes
        finally:
            w.close()
    try:
        return await asyncio.wait_for(go(), timeout)
    except Exception:
        return False


async def tcp_probe(host, port, timeout):
    try:
        _, w = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        w.close()
        return True
    except Exception:
        return False


# ---------------------------------------------------------------------------------------------
# Containers and pods


class Container:
    def __init__(self, pod, spec, kind):
        self.pod, self.spec, self.kind = pod, spec, kind  # kind: init, sidecar, main
        self.name = spec["name"]
        self.proc = None
        self.restarts = 0
        self.started = False  # startup probe passed (or none)
        self.ready = False
        self.exit_code = None
        self.tasks = []
        self.stopping = False
        self.log_path = os.path.join(pod.cluster.workdir, "logs", f"{pod.name}.{self.name}.log")
        self.probe_counts = {"startup": [0, 0], "readiness": [0, 0], "liveness": [0, 0]}  # ok, failed

    def port(self, ref):
        if isinstance(ref, int) or str(ref).isdigit():
            return int(ref)
        for c in self.pod.all_specs():
            for p in c.get("ports", []):
                if p.get("name") == ref:
                    return p["containerPort"]
        raise TwinError(f"{self.pod.name}/{self.name}: no port named {ref}")

    def argv_env(self):
        cl = self.pod.cluster
        env = {"PATH": PATH, "HOSTNAME": self.pod.name, "HOME": "/"}
        image = cl.image_config(self.spec["image"])
        env.update(image.get("env", {}))
        env.update(self.pod.service_links)
        for e in self.spec.get("env", []):
            if "value" in e:
                env[e["name"]] = expand(e["value"], env)
            elif "valueFrom" in e:
                env[e["name"]] = cl.value_from(self.pod, e["valueFrom"])
        if "command" in self.spec:
            argv = [expand(a, env) for a in self.spec["command"]]
            argv += [expand(a, env) for a in self.spec.get("args", [])]
        else:
            argv = list(image["entrypoint"])
            argv += [expand(a, env) for a in self.spec.get("args", image.get("cmd", []))]
        return argv, env

    def ids(self):
        sc = merge(self.pod.spec.get("securityContext") or {}, self.spec.get("securityContext") or {})
        return sc.get("runAsUser"), sc.get("runAsGroup")

    async def start(self):
        """Starts the process; a missing Secret or ConfigMap is retried, as the kubelet does."""
        while True:
            try:
                argv, env = self.argv_env()
                break
            except TwinError as e:
                if self.pod.terminating:
                    raise
                if self.pod.status_note != "CreateContainerConfigError":
                    self.pod.cluster.note(f"{self.pod.name}/{self.name}: CreateContainerConfigError: {e}")
                self.pod.status_note = "CreateContainerConfigError"
                await asyncio.sleep(1)
        if self.pod.status_note == "CreateContainerConfigError":
            self.pod.status_note = ""
        uid, gid = self.ids()
        wrap = ["ip", "netns", "exec", self.pod.netns]
        if uid is not None or gid is not None:
            wrap += ["setpriv"]
            if uid is not None:
                wrap += ["--reuid", str(uid)]
            if gid is not None:
                wrap += ["--regid", str(gid)]
            wrap += ["--clear-groups", "--"]
        self.exit_code = None
        self.started = False
        self.ready = False
        self.stopping = False
        logf = open(self.log_path, "ab")
        logf.write(f"--- start #{self.restarts} {' '.join(argv)}\n".encode())
        logf.flush()
        self.proc = await asyncio.create_subprocess_exec(*wrap, *argv, env=env, stdout=logf, stderr=logf,
                                                         stdin=subprocess.DEVNULL, cwd="/",
                                                         start_new_session=True)
        logf.close()
        self.pod.cluster.note(f"{self.pod.name}/{self.name} started (pid {self.proc.pid})")
        self.tasks = [asyncio.ensure_future(self.probe_loop())]

    def signal(self, sig):
        if self.proc and self.proc.returncode is None:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass

    def running(self):
        return self.proc is not None and self.proc.returncode is None

    async def probe_once(self, probe):
        timeout = probe.get("timeoutSeconds", 1)
        if "httpGet" in probe:
            g = probe["httpGet"]
            return await http_probe(g.get("host", self.pod.ip), self.port(g["port"]), g.get("path", "/"), timeout)
        if "tcpSocket" in probe:
            t = probe["tcpSocket"]
            return await tcp_probe(t.get("host", self.pod.ip), self.port(t["port"]), timeout)
        if "exec" in probe:
            raise TwinError(f"{self.pod.name}/{self.name}: exec probes are not supported")
        return True

    async def probe_loop(self):
        """startup first; then readiness and liveness, each on its own period."""
        proc = self.proc
        sp = self.spec.get("startupProbe")
        if sp:
            await asyncio.sleep(sp.get("initialDelaySeconds", 0))
            fails = 0
            while proc.returncode is None:
                ok = await self.probe_once(sp)
                self.probe_counts["startup"][0 if ok else 1] += 1
                if ok:
                    break
                fails += 1
                if fails >= sp.get("failureThreshold", 3):
                    self.pod.cluster.note(f"{self.pod.name}/{self.name} failed its startup probe {fails} times: restart")
                    self.signal(signal.SIGKILL)
                    return
                await asyncio.sleep(sp.get("periodSeconds", 10))
        if proc.returncode is not None:
            return
        self.started = True
        tasks = []
        rp = self.spec.get("readinessProbe")
        if rp:
            tasks.append(self.readiness(rp, proc))
        elif self.kind != "init":
            self.ready = True
        lp = self.spec.get("livenessProbe")
        if lp:
            tasks.append(self.liveness(lp, proc))
        if tasks:
            await asyncio.gather(*tasks)

    async def readiness(self, p, proc):
        await asyncio.sleep(p.get("initialDelaySeconds", 0))
        ok_run = fail_run = 0
        while proc.returncode is None and not self.stopping:
            ok = await self.probe_once(p)
            self.probe_counts["readiness"][0 if ok else 1] += 1
            if ok:
                ok_run, fail_run = ok_run + 1, 0
                if ok_run >= p.get("successThreshold", 1) and not self.ready:
                    self.ready = True
                    self.pod.cluster.changed()
            else:
                ok_run, fail_run = 0, fail_run + 1
                if fail_run >= p.get("failureThreshold", 3) and self.ready:
                    self.ready = False
                    self.pod.cluster.note(f"{self.pod.name}/{self.name} not ready ({fail_run} failed probes)")
                    self.pod.cluster.changed()
            await asyncio.sleep(p.get("periodSeconds", 10))

    async def liveness(self, p, proc):
        await asyncio.sleep(p.get("initialDelaySeconds", 0))
        fails = 0
        while proc.returncode is None and not self.stopping:
            ok = await self.probe_once(p)
            self.probe_counts["liveness"][0 if ok else 1] += 1
            fails = 0 if ok else fails + 1
            if fails >= p.get("failureThreshold", 3):
                self.pod.cluster.note(f"{self.pod.name}/{self.name} failed its liveness probe {fails} times: restart")
                self.signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), self.pod.spec.get("terminationGracePeriodSeconds", 30))
                except asyncio.TimeoutError:
                    self.signal(signal.SIGKILL)
                return
            await asyncio.sleep(p.get("periodSeconds", 10))

    def cancel(self):
        for t in self.tasks:
            t.cancel()
        self.tasks = []


class Pod:
    def __init__(self, cluster, namespace, name, template, owner, revision, hostname=None, subdomain=None):
        self.cluster, self.namespace, self.name = cluster, namespace, name
        self.meta = copy.deepcopy(template.get("metadata") or {})
        self.meta["name"] = name
        self.meta["namespace"] = namespace
        self.labels = dict(self.meta.get("labels") or {})
        self.spec = copy.deepcopy(template["spec"])
        self.owner, self.revision = owner, revision
        self.hostname, self.subdomain = hostname, subdomain
        self.ip = None
        self.netns = None
        self.index = None
        self.phase = "Pending"
        self.terminating = False
        self.gone = False
        self.created_at = time.monotonic()
        self.init = []
        for c in self.spec.get("initContainers", []):
            self.init.append(Container(self, c, "sidecar" if c.get("restartPolicy") == "Always" else "init"))
        self.main = [Container(self, c, "main") for c in self.spec["containers"]]
        self.init_done = 0
        self.status_note = ""
        self.service_links = {}
        self.task = None

    def all_specs(self):
        return self.spec.get("initContainers", []) + self.spec["containers"]

    def sidecars(self):
        return [c for c in self.init if c.kind == "sidecar"]

    def ready(self):
        if self.terminating or self.phase != "Running":
            return False
        return all(c.ready for c in self.main + self.sidecars())

    def status(self):
        """(READY, STATUS) as kubectl get pods prints them."""
        shown = self.main + self.sidecars()
        ready = f"{sum(1 for c in shown if c.ready and c.running())}/{len(shown)}"
        if self.terminating:
            return ready, "Terminating"
        if self.init_done < len(self.init):
            return ready, self.status_note or f"Init:{self.init_done}/{len(self.init)}"
        return ready, self.status_note or self.phase

    async def run(self):
        """The kubelet's part: init containers in order, then the main containers; restarts."""
        try:
            for c in self.init:
                if self.terminating:
                    return
                if c.kind == "sidecar":
                    await self.keep_running(c, wait_started=True)
                else:
                    while not self.terminating:
                        await c.start()
                        code = await c.proc.wait()
                        c.cancel()
                        if code == 0:
                            break
                        c.restarts += 1
                        self.status_note = f"Init:CrashLoopBackOff"
                        await asyncio.sleep(self.backoff(c))
                        self.status_note = ""
                self.init_done += 1
            if self.terminating:
                return
            self.phase = "Running"
            self.cluster.changed()
            await asyncio.gather(*(self.keep_running(c) for c in self.main))
        except asyncio.CancelledError:
            pass
        except Exception as e:  # e.g. CreateContainerConfigError: shown in the pod's status
            self.status_note = f"Error: {e}"
            self.cluster.note(f"pod {self.namespace}/{self.name} cannot run: {e!r}")

    def backoff(self, c):
        return min(10 * 2 ** max(c.restarts - 1, 0), 300)

    async def keep_running(self, c, wait_started=False):
        """Starts c and restarts it whenever it exits (restartPolicy Always). With wait_started,
        returns once its startup probe has passed (a native sidecar), restarting it meanwhile."""
        async def supervise():
            while not self.terminating:
                code = await c.proc.wait()
                c.cancel()
                c.exit_code = code
                was_ready = c.ready
                c.ready = c.started = False
                if was_ready:
                    self.cluster.changed()
                if self.terminating or c.stopping:
                    return
                c.restarts += 1
                self.cluster.note(f"{self.name}/{c.name} exited with {code}; restart #{c.restarts}")
                self.status_note = "CrashLoopBackOff" if self.phase == "Running" else "Init:CrashLoopBackOff"
                await asyncio.sleep(self.backoff(c))
                self.status_note = ""
                if self.terminating:
                    return
                await c.start()
        await c.start()
        sup = asyncio.ensure_future(supervise())
        self.cluster.keep(sup)
        if wait_started:
            while not c.started and not self.terminating:
                await asyncio.sleep(0.1)
            return
        await sup


# ---------------------------------------------------------------------------------------------
# Services: userspace proxies on ClusterIP:port (and 127.0.0.1:nodePort), like kube-proxy's


async def pipe(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except Exception:
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


class ServiceProxy:
    def __init__(self, cluster, svc, cluster_ip):
        self.cluster, self.svc, self.ip = cluster, svc, cluster_ip
        self.ns, self.name = svc["metadata"]["namespace"], svc["metadata"]["name"]
        self.servers = []
        self.rr = 0
        self.connections = []  # (client peer, pod name) for each accepted connection

    async def start(self):
        spec = self.svc["spec"]
        for port in spec.get("ports", []):
            handler = self.handler(port)
            self.servers.append(await asyncio.start_server(handler, self.ip, port["port"], reuse_address=True))
            if spec.get("type") in ("NodePort", "LoadBalancer"):
                np = port.get("nodePort") or self.cluster.free_node_port()
                port["nodePort"] = np
                self.servers.append(await asyncio.start_server(handler, "127.0.0.1", np, reuse_address=True))
                self.cluster.note(f"service {self.ns}/{self.name}: NodePort 127.0.0.1:{np}")

    def handler(self, port):
        async def handle(reader, writer):
            eps = self.cluster.endpoints(self.svc, port)
            if not eps:
                writer.close()  # kube-proxy rejects: no endpoints
                return
            pod, target = eps[self.rr % len(eps)]
            self.rr += 1
            self.connections.append((writer.get_extra_info("peername"), pod.name))
            try:
                ur, uw = await asyncio.wait_for(asyncio.open_connection(pod.ip, target), 5)
            except Exception:
                writer.close()
                return
            await asyncio.gather(pipe(reader, uw), pipe(ur, writer))
        return handle

    def update(self, svc):
        self.svc = svc  # selector changes apply to new connections; ports stay (recreate to change)

    def close(self):
        for s in self.servers:
            s.close()


# ---------------------------------------------------------------------------------------------
# The ALB twin: an Ingress of class alb with IP targets, as the AWS Load Balancer Controller
# builds it. Health-check defaults are the controller's documented ones.


ALB = "alb.ingress.kubernetes.io/"


class AlbTwin:
    DEFAULTS = {"healthcheck-interval-seconds": "15", "healthcheck-timeout-seconds": "5", "healthcheck-path": "/",
                "healthy-threshold-count": "2", "unhealthy-threshold-count": "2", "success-codes": "200",
                "healthcheck-port": "traffic-port"}

    def __init__(self, cluster, ingress, lag):
        self.cluster, self.ingress, self.lag = cluster, ingress, lag
        ann = {k[len(ALB):]: v for k, v in (ingress["metadata"].get("annotations") or {}).items() if k.startswith(ALB)}
        self.ann = merge(self.DEFAULTS, ann)
        self.interval = int(self.ann["healthcheck-interval-seconds"])
        self.timeout = int(self.ann["healthcheck-timeout-seconds"])
        self.healthy_n = int(self.ann["healthy-threshold-count"])
        self.unhealthy_n = int(self.ann["unhealthy-threshold-count"])
        self.path = self.ann["healthcheck-path"]
        self.codes = self.parse_codes(self.ann["success-codes"])
        attrs = dict(kv.split("=", 1) for kv in self.ann.get("load-balancer-attributes", "").split(",") if "=" in kv)
        self.idle = int(attrs.get("idle_timeout.timeout_seconds", 60))
        if self.interval <= self.timeout:
            # CreateTargetGroup's answer (the controller logs it and builds no ALB).
            raise TwinError("ValidationError: Health check interval must be greater than the timeout. "
                            f"(interval {self.interval}, timeout {self.timeout})")
        if self.ann.get("target-type", "instance") != "ip":
            raise TwinError("the ALB twin models target-type ip only")
        self.routes = []  # (path, pathType, service name, port ref)
        ns = ingress["metadata"]["namespace"]
        for rule in ingress["spec"].get("rules", []):
            for p in rule.get("http", {}).get("paths", []):
                b = p["backend"]["service"]
                self.routes.append((p["path"], p.get("pathType", "Prefix"), ns, b["name"],
                                    b["port"].get("name", b["port"].get("number"))))
        self.targets = {}  # (ip, port) -> dict(state, ok, fail, pod, since)
        self.rr = 0
        self.counts = {"requests": 0, "502": 0, "503": 0}
        self.server = None
        self.port = None
        self.tasks = []

    @staticmethod
    def parse_codes(text):
        codes = set()
        for part in str(text).split(","):
            if "-" in part:
                a, b = part.split("-")
                codes.update(range(int(a), int(b) + 1))
            else:
                codes.add(int(part))
        return codes

    async def start(self):
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        self.tasks = [asyncio.ensure_future(self.controller()), asyncio.ensure_future(self.health())]
        self.cluster.note(f"ALB twin for ingress {self.ingress['metadata']['name']} on 127.0.0.1:{self.port} "
                          f"(health {self.path} every {self.interval}s, timeout {self.timeout}s, "
                          f"healthy {self.healthy_n}, unhealthy {self.unhealthy_n}; idle {self.idle}s; lag {self.lag}s)")

    def wanted(self):
        """The target set the controller computes: endpoints of every backend Service."""
        out = {}
        for _, _, ns, name, portref in self.routes:
            svc = self.cluster.objects.get(("Service", ns, name))
            if not svc:
                continue
            for port in svc["spec"]["ports"]:
                if portref in (port.get("name"), port["port"]):
                    for pod, tp in self.cluster.endpoints(svc, port):
                        out[(pod.ip, tp)] = pod.name
        return out

    async def controller(self):
        """Registers new endpoints and deregisters gone ones, each after the controller's lag."""
        seen = {}  # key -> (present, since)
        while True:
            wanted = self.wanted()
            now = time.monotonic()
            for key in set(wanted) | set(seen) | set(self.targets):
                present = key in wanted
                if key not in seen or seen[key][0] != present:
                    seen[key] = (present, now)
                stable = now - seen[key][1] >= (self.lag if not present else min(self.lag, 2))
                t = self.targets.get(key)
                if present and stable and (t is None or t["state"] == "draining"):
                    self.targets[key] = {"state": "initial", "ok": 0, "fail": 0, "pod": wanted[key]}
                    self.cluster.note(f"ALB: registered {key[0]}:{key[1]} ({wanted[key]})")
                elif not present and stable and t is not None and t["state"] != "draining":
                    t["state"] = "draining"
                    self.cluster.note(f"ALB: deregistered {key[0]}:{key[1]} ({t['pod']})")
            await asyncio.sleep(0.5)

    async def health(self):
        while True:
            for key, t in list(self.targets.items()):
                if t["state"] == "draining":
                    continue
                ok = await http_probe(key[0], key[1], self.path, self.timeout, self.codes)
                if ok:
                    t["ok"], t["fail"] = t["ok"] + 1, 0
                    if t["state"] != "healthy" and t["ok"] >= self.healthy_n:
                        t["state"] = "healthy"
                        self.cluster.note(f"ALB: {key[0]}:{key[1]} healthy")
                else:
                    t["ok"], t["fail"] = 0, t["fail"] + 1
                    if t["state"] == "healthy" and t["fail"] >= self.unhealthy_n:
                        t["state"] = "unhealthy"
                        self.cluster.note(f"ALB: {key[0]}:{key[1]} unhealthy")
            await asyncio.sleep(self.interval)

    def routable(self):
        return [k for k, t in self.targets.items() if t["state"] == "healthy"]

    def healthy_count(self):
        return len(self.routable())

    async def read_body(self, reader, headers):
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
                chunk = await reader.readexactly(size + 2)
                body += chunk[:-2]
                if size == 0:
                    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass
                    return body
        n = int(headers.get("content-length", "0") or 0)
        return await reader.readexactly(n) if n else b""

    @staticmethod
    async def read_head(reader):
        first = await reader.readline()
        if not first:
            return None, None
        headers, raw = {}, []
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            k, _, v = line.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
            raw.append((k.strip(), v.strip()))
        return first.decode("latin-1").rstrip("\r\n"), (headers, raw)

    def route(self, path):
        for p, kind, *_ in self.routes:
            if (kind == "Exact" and path == p) or (kind != "Exact" and path.startswith(p)):
                return True
        return False

    async def handle(self, reader, writer):
        try:
            while True:
                try:
                    line, head = await asyncio.wait_for(self.read_head(reader), self.idle)
                except asyncio.TimeoutError:
                    break
                if line is None:
                    break
                headers, raw = head
                body = await self.read_body(reader, headers)
                method, target, _ = line.split(" ", 2)
                self.counts["requests"] += 1
                if not self.route(target.split("?")[0]):
                    status, rhead, rbody = 404, [], b""
                else:
                    status, rhead, rbody = await self.forward(method, target, raw, body)
                out = [f"HTTP/1.1 {status} {'OK' if status < 400 else 'Error'}"]
                out += [f"{k}: {v}" for k, v in rhead if k.lower() not in
                        ("content-length", "transfer-encoding", "connection", "keep-alive")]
                out.append(f"Content-Length: {len(rbody)}")
                writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1") + rbody)
                await writer.drain()
        except Exception:
            pass
        finally:
            writer.close()

    async def forward(self, method, target, raw, body):
        routable = self.routable()
        if not routable:
            self.counts["503"] += 1
            return 503, [], b""
        key = routable[self.rr % len(routable)]
        self.rr += 1
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(*key), 10)
        except Exception:
            self.counts["502"] += 1
            return 502, [], b""
        try:
            req = [f"{method} {target} HTTP/1.1"]
            req += [f"{k}: {v}" for k, v in raw if k.lower() not in
                    ("content-length", "transfer-encoding", "connection", "keep-alive")]
            req += [f"Content-Length: {len(body)}", "Connection: close", f"X-Forwarded-For: 127.0.0.1"]
            w.write(("\r\n".join(req) + "\r\n\r\n").encode("latin-1") + body)
            await w.drain()
            line, head = await self.read_head(r)
            if line is None:
                raise ConnectionError("closed")
            status = int(line.split()[1])
            headers, rraw = head
            if "content-length" in headers or "chunked" in headers.get("transfer-encoding", ""):
                rbody = await self.read_body(r, headers)
            else:
                rbody = await r.read()
            return status, rraw, rbody
        except Exception:
            self.counts["502"] += 1
            return 502, [], b""
        finally:
            w.close()

    def close(self):
        for t in self.tasks:
            t.cancel()
        if self.server:
            self.server.close()


# ---------------------------------------------------------------------------------------------
# The cluster


class Cluster:
    def __init__(self, workdir, images, lag=10.0):
        """images: {image reference prefix: {"entrypoint": [...], "cmd": [...], "env": {...}}}."""
        self.workdir = workdir
        self.images = images
        self.lag = lag
        os.makedirs(os.path.join(workdir, "logs"), exist_ok=True)
        self.objects = {}  # (kind, ns, name) -> manifest
        self.pods = {}  # (ns, name) -> Pod
        self.events = []  # (monotonic, "created"|"terminating"|"deleted", ns, name, owner)
        self.proxies = {}  # (ns, name) -> ServiceProxy
        self.cluster_ips = {}  # (ns, name) -> ip
        self.albs = {}  # (ns, name) -> AlbTwin
        self.alb_errors = {}  # (ns, name) -> message
        self.revisions = {}  # (kind, ns, name) -> hash of the template last applied
        self.free_ips = [f"{NET}.{i}" for i in range(10, 200)]
        self.free_cips = [f"{NET}.{i}" for i in range(200, 255)]
        self.next_index = 0
        self.tasks = []
        self.notes = []
        self.node_ports = set()
        self.dns_dirty = True
        self.loop_task = None

    # -- bookkeeping
    def note(self, msg):
        self.notes.append((time.monotonic(), msg))
        log(msg)

    def keep(self, task):
        self.tasks.append(task)

    def changed(self):
        self.dns_dirty = True

    def image_config(self, image):
        repo = re.split(r"[@]", image)[0]
        repo = repo.rsplit(":", 1)[0] if ":" in repo.rsplit("/", 1)[-1] else repo
        for prefix, conf in self.images.items():
            if repo == prefix:
                return conf
        for prefix, conf in self.images.items():  # a registry's copy of the same image
            if repo.rsplit("/", 1)[-1] == prefix.rsplit("/", 1)[-1]:
                return conf
        raise TwinError(f"no local stand-in for image {image}")

    def free_node_port(self):
        import socket
        while True:
            p = random.randint(30000, 32767)
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", p))
                s.close()
                return p
            except OSError:
                s.close()

    def value_from(self, pod, vf):
        if "fieldRef" in vf:
            f = vf["fieldRef"]["fieldPath"]
            return {"metadata.name": pod.name, "metadata.namespace": pod.namespace, "status.podIP": pod.ip,
                    "spec.nodeName": "podtwin", "status.hostIP": HOST_IP}[f]
        for kind, key in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
            if key in vf:
                ref = vf[key]
                obj = self.objects.get((kind, pod.namespace, ref["name"]))
                if obj is None:
                    raise TwinError(f"{pod.name}: {kind} {ref['name']} not found (CreateContainerConfigError)")
                data = dict(obj.get("data") or {})
                if kind == "Secret":
                    data = {k: base64.b64decode(v).decode() for k, v in data.items()}
                data.update(obj.get("stringData") or {})
                if ref["key"] not in data:
                    raise TwinError(f"{pod.name}: key {ref['key']} not in {kind} {ref['name']}")
                return data[ref["key"]]
        raise TwinError(f"unsupported valueFrom {vf}")

    # -- network
    @staticmethod
    def clean_leftovers():
        for line in sh("ip", "netns", "list", check=False).splitlines():
            ns = line.split()[0] if line.split() else ""
            if ns.startswith(PREFIX + "-"):
                for pid in sh("ip", "netns", "pids", ns, check=False).split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                sh("ip", "netns", "del", ns, check=False)
        for line in sh("ip", "-o", "link", "show", check=False).splitlines():
            name = line.split(":")[1].strip().split("@")[0]
            if name.startswith(PREFIX):
                sh("ip", "link", "del", name, check=False)
        if os.path.isdir(NETNS_ETC):
            for d in os.listdir(NETNS_ETC):
                if d.startswith(PREFIX + "-"):
                    shutil.rmtree(os.path.join(NETNS_ETC, d), ignore_errors=True)

    def net_up(self):
        self.clean_leftovers()
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
        # A fixed address: otherwise the bridge takes the lowest of its ports' addresses, which
        # changes as pods come and go, and every pod's cached neighbour entry for the host (the
        # ClusterIPs) points nowhere for seconds.
        sh("ip", "link", "set", BRIDGE, "address", "02:70:74:77:00:01")
        sh("ip", "addr", "add", f"{HOST_IP}/24", "dev", BRIDGE)
        sh("ip", "link", "set", BRIDGE, "up")

    def pod_net(self, pod):
        pod.index = self.next_index
        self.next_index += 1
        pod.ip = self.free_ips.pop(0)
        pod.netns = f"{PREFIX}-{pod.namespace}-{pod.name}"
        host, peer = f"{PREFIX}h{pod.index}", f"{PREFIX}p{pod.index}"
        sh("ip", "netns", "add", pod.netns)
        sh("ip", "link", "add", host, "type", "veth", "peer", "name", peer)
        sh("ip", "link", "set", peer, "netns", pod.netns)
        sh("ip", "link", "set", host, "master", BRIDGE)
        sh("ip", "link", "set", host, "up")
        sh("ip", "-n", pod.netns, "link", "set", peer, "name", "eth0")
        sh("ip", "-n", pod.netns, "addr", "add", f"{pod.ip}/24", "dev", "eth0")
        sh("ip", "-n", pod.netns, "link", "set", "eth0", "up")
        sh("ip", "-n", pod.netns, "link", "set", "lo", "up")
        sh("ip", "-n", pod.netns, "route", "add", "default", "via", HOST_IP)
        d = os.path.join(NETNS_ETC, pod.netns)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "resolv.conf"), "w") as f:
            f.write("# the pod twin answers names through /etc/hosts only\nnameserver 127.0.0.1\n"
                    "options timeout:1 attempts:1\n")
        # A name missing from the hosts file must fail as CoreDNS's NXDOMAIN does ("no such
        # name"), not as a resolver that did not answer: the gateway tells the two apart (410
        # for a replica that no longer exists, 503 for one that may). glibc consults only the
        # files source with this; a static musl binary has no nsswitch and would see the
        # unanswered server instead (docs/podtwin.md says so).
        with open(os.path.join(d, "nsswitch.conf"), "w") as f:
            f.write("hosts: files\n")
        with open(os.path.join(d, "hosts"), "w") as f:
            f.write(self.hosts_for(pod))

    def pod_net_down(self, pod):
        if pod.netns:
            for pid in sh("ip", "netns", "pids", pod.netns, check=False).split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            sh("ip", "netns", "del", pod.netns, check=False)
            sh("ip", "link", "del", f"{PREFIX}h{pod.index}", check=False)
            shutil.rmtree(os.path.join(NETNS_ETC, pod.netns), ignore_errors=True)
            self.free_ips.append(pod.ip)

    def net_down(self):
        for pod in list(self.pods.values()):
            self.pod_net_down(pod)
        for ip in self.cluster_ips.values():
            if ip:
                sh("ip", "addr", "del", f"{ip}/32", "dev", BRIDGE, check=False)
        sh("ip", "link", "del", BRIDGE, check=False)
        self.clean_leftovers()

    # -- DNS
    def hosts_common(self):
        lines = []
        for (ns, name), svc in ((k[1:], v) for k, v in self.objects.items() if k[0] == "Service"):
            names = [name, f"{name}.{ns}", f"{name}.{ns}.svc", f"{name}.{ns}.svc.cluster.local"]
            ip = self.cluster_ips.get((ns, name))
            if ip:
                lines.append(f"{ip} {' '.join(names)}")
                continue
            # headless: the Service's name lists its pods, and each pod with hostname/subdomain
            # has its own name. With publishNotReadyAddresses a pod is published while it exists
            # (starting, unready or terminating); otherwise only while it is ready.
            not_ready_ok = svc["spec"].get("publishNotReadyAddresses", False)
            for pod in self.pods.values():
                if pod.namespace != ns or pod.gone or pod.ip is None:
                    continue
                if not matches(svc["spec"].get("selector"), pod.labels):
                    continue
                if not (pod.ready() or not_ready_ok):
                    continue
                lines.append(f"{pod.ip} {' '.join(names)}")
                if pod.hostname and pod.subdomain == name:
                    base = f"{pod.hostname}.{name}.{ns}"
                    lines.append(f"{pod.ip} {base} {base}.svc {base}.svc.cluster.local")
        return lines

    def hosts_for(self, pod):
        own = f"{pod.ip} {pod.name}"
        if pod.hostname and pod.subdomain:
            own = f"{pod.ip} {pod.hostname}.{pod.subdomain}.{pod.namespace}.svc.cluster.local {pod.hostname}"
        return "\n".join(["127.0.0.1 localhost", "::1 localhost", own] + self.hosts_common()) + "\n"

    def write_dns(self):
        for pod in self.pods.values():
            if pod.gone or not pod.netns:
                continue
            path = os.path.join(NETNS_ETC, pod.netns, "hosts")
            text = self.hosts_for(pod)
            try:
                with open(path, "r+") as f:  # in place: the bind mounts see the same inode
                    if f.read() != text:
                        # write, then cut: a reader never finds the file empty
                        f.seek(0)
                        f.write(text)
                        f.truncate()
            except FileNotFoundError:
                pass

    # -- endpoints
    def endpoints(self, svc, port):
        """[(pod, targetPort)] of ready, non-terminating pods matching the selector."""
        out = []
        ns = svc["metadata"]["namespace"]
        for pod in sorted(self.pods.values(), key=lambda p: p.name):
            if pod.namespace != ns or pod.gone or not pod.ready():
                continue
            if not matches(svc["spec"].get("selector"), pod.labels):
                continue
            tp = port.get("targetPort", port["port"])
            try:
                out.append((pod, pod.main[0].port(tp)))
            except TwinError:
                continue
        return out

    # -- apply
    async def apply(self, manifests):
        """Creates or updates every object; controllers then converge."""
        for m in manifests:
            meta = m["metadata"]
            meta.setdefault("namespace", "default")
            self.objects[(m["kind"], meta["namespace"], meta["name"])] = copy.deepcopy(m)
        for m in manifests:
            kind = m["kind"]
            if kind == "Service":
                await self.apply_service(m)
            elif kind == "Ingress":
                await self.apply_ingress(m)
        self.changed()

    async def apply_service(self, svc):
        key = (svc["metadata"]["namespace"], svc["metadata"]["name"])
        if key in self.proxies:
            self.proxies[key].update(self.objects[("Service",) + key])
            return
        if svc["spec"].get("clusterIP") == "None":
            self.cluster_ips[key] = None
            return
        ip = self.free_cips.pop(0)
        sh("ip", "addr", "add", f"{ip}/32", "dev", BRIDGE)
        self.cluster_ips[key] = ip
        proxy = ServiceProxy(self, self.objects[("Service",) + key], ip)
        await proxy.start()
        self.proxies[key] = proxy

    async def apply_ingress(self, ing):
        key = (ing["metadata"]["namespace"], ing["metadata"]["name"])
        cls = ing["spec"].get("ingressClassName") or (ing["metadata"].get("annotations") or {}).get(
            "kubernetes.io/ingress.class")
        if cls != "alb":
            return
        if key in self.albs:
            self.albs.pop(key).close()
        try:
            alb = AlbTwin(self, ing, self.lag)
        except TwinError as e:
            self.alb_errors[key] = str(e)
            self.note(f"ingress {key[0]}/{key[1]}: the ALB twin refuses it: {e}")
            return
        self.alb_errors.pop(key, None)
        await alb.start()
        self.albs[key] = alb

    def service_links(self, ns):
        """The variables enableServiceLinks (default true) puts into every container."""
        env = {}
        for (sns, name), ip in self.cluster_ips.items():
            if sns != ns or not ip:
                continue
            svc = self.objects[("Service", sns, name)]
            n = name.upper().replace("-", "_")
            ports = svc["spec"].get("ports", [])
            if not ports:
                continue
            p0 = ports[0]
            env[f"{n}_SERVICE_HOST"] = ip
            env[f"{n}_SERVICE_PORT"] = str(p0["port"])
            env[f"{n}_PORT"] = f"tcp://{ip}:{p0['port']}"
            for p in ports:
                proto = p.get("protocol", "TCP")
                if p.get("name"):
                    env[f"{n}_SERVICE_PORT_{p['name'].upper().replace('-', '_')}"] = str(p["port"])
                base = f"{n}_PORT_{p['port']}_{proto}"
                env[base] = f"{proto.lower()}://{ip}:{p['port']}"
                env[base + "_PROTO"] = proto.lower()
                env[base + "_PORT"] = str(p["port"])
                env[base + "_ADDR"] = ip
        return env

    # -- pods
    def create_pod(self, ns, name, template, owner, revision, hostname=None, subdomain=None):
        pod = Pod(self, ns, name, template, owner, revision, hostname, subdomain)
        if template["spec"].get("enableServiceLinks", True):
            pod.service_links = self.service_links(ns)
        self.pods[(ns, name)] = pod
        self.pod_net(pod)
        self.events.append((time.monotonic(), "created", ns, name, owner))
        self.note(f"pod {ns}/{name} created ({pod.ip}, revision {revision})")
        pod.task = asyncio.ensure_future(pod.run())
        self.changed()
        return pod

    def delete_pod(self, pod):
        if pod.terminating:
            return
        pod.terminating = True
        self.changed()
        self.events.append((time.monotonic(), "terminating", pod.namespace, pod.name, pod.owner))
        self.note(f"pod {pod.namespace}/{pod.name} terminating")
        self.keep(asyncio.ensure_future(self.terminate(pod)))

    async def terminate(self, pod):
        grace = pod.spec.get("terminationGracePeriodSeconds", 30)
        deadline = time.monotonic() + grace
        if pod.task:
            pod.task.cancel()

        async def stop(containers, until):
            for c in containers:
                c.stopping = True
                c.cancel()
                c.signal(signal.SIGTERM)
            for c in containers:
                if c.proc is None:
                    continue
                try:
                    await asyncio.wait_for(c.proc.wait(), max(until - time.monotonic(), 0.01))
                except asyncio.TimeoutError:
                    self.note(f"{pod.name}/{c.name} still running after the grace period: SIGKILL")
                    c.signal(signal.SIGKILL)
                    await c.proc.wait()
                c.exit_code = c.proc.returncode
        await stop(pod.main, deadline)
        # sidecars get SIGTERM after the main containers, in reverse order, with what is left
        # of the grace period (at least 2 s, as the kubelet gives them)
        for c in reversed(pod.init):
            await stop([c], max(deadline, time.monotonic() + 2))
        pod.gone = True
        self.pod_net_down(pod)
        del self.pods[(pod.namespace, pod.name)]
        self.events.append((time.monotonic(), "deleted", pod.namespace, pod.name, pod.owner))
        self.note(f"pod {pod.namespace}/{pod.name} deleted "
                  f"(exit codes {', '.join(f'{c.name}={c.exit_code}' for c in pod.main + pod.init)})")
        self.changed()

    # -- controllers
    async def run(self):
        self.loop_task = asyncio.ensure_future(self.control_loop())
        self.keep(asyncio.ensure_future(self.lag_monitor()))

    async def lag_monitor(self):
        """The largest delay of this process's event loop (it runs every proxy, probe and
        client): a figure that says whether a timeout was the harness's own."""
        self.max_lag = 0.0
        while True:
            t = time.monotonic()
            await asyncio.sleep(0.05)
            self.max_lag = max(self.max_lag, time.monotonic() - t - 0.05)

    async def control_loop(self):
        while True:
            try:
                for key, obj in list(self.objects.items()):
                    if key[0] == "Deployment":
                        self.reconcile_deployment(obj)
                    elif key[0] == "StatefulSet":
                        self.reconcile_statefulset(obj)
                if self.dns_dirty:
                    self.dns_dirty = False
                    self.write_dns()
            except Exception as e:  # a controller error is a test failure, not a crash
                self.note(f"controller error: {e!r}")
                raise
            await asyncio.sleep(0.2)

    def desired_replicas(self, obj):
        r = obj["spec"].get("replicas")
        if r is None:
            # KEDA's ScaledObject owns the count: its minReplicaCount
            for (kind, ns, _), so in self.objects.items():
                if kind == "ScaledObject" and ns == obj["metadata"]["namespace"] and \
                        so["spec"]["scaleTargetRef"]["name"] == obj["metadata"]["name"]:
                    return so["spec"].get("minReplicaCount", 1)
            return 1
        return r

    def owned(self, kind, obj):
        owner = f"{kind}/{obj['metadata']['name']}"
        return [p for p in self.pods.values()
                if p.owner == owner and p.namespace == obj["metadata"]["namespace"]]

    def reconcile_deployment(self, d):
        ns, name = d["metadata"]["namespace"], d["metadata"]["name"]
        want = self.desired_replicas(d)
        tmpl = d["spec"]["template"]
        rev = template_hash(tmpl)
        ru = (d["spec"].get("strategy") or {}).get("rollingUpdate") or {}
        surge = intorpct(ru.get("maxSurge", "25%"), want, True)
        unavail = intorpct(ru.get("maxUnavailable", "25%"), want, False)
        if surge == 0 and unavail == 0:
            unavail = 1
        pods = [p for p in self.owned("Deployment", d) if not p.terminating]
        new = [p for p in pods if p.revision == rev]
        old = [p for p in pods if p.revision != rev]
        total = len(pods)
        # scale the new ReplicaSet up within the surge
        room = min(want + surge - total, want - len(new))
        for _ in range(max(room, 0)):
            suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
            t = copy.deepcopy(tmpl)
            t.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = rev
            self.create_pod(ns, f"{name}-{rev}-{suffix}", t, f"Deployment/{name}", rev)
        # scale old ReplicaSets down while keeping want - maxUnavailable available
        ready = sum(1 for p in pods if p.ready())
        can_remove = ready - (want - unavail)
        for p in sorted(old, key=lambda p: (p.ready(), p.created_at)):
            if not p.ready():
                self.delete_pod(p)
            elif can_remove > 0:
                self.delete_pod(p)
                can_remove -= 1
        # a plain scale-down of the current ReplicaSet
        if not old and len(new) > want:
            for p in sorted(new, key=lambda p: (p.ready(), -p.created_at))[:len(new) - want]:
                self.delete_pod(p)

    def reconcile_statefulset(self, s):
        ns, name = s["metadata"]["namespace"], s["metadata"]["name"]
        want = self.desired_replicas(s)
        tmpl = s["spec"]["template"]
        rev = template_hash(tmpl)
        parallel = s["spec"].get("podManagementPolicy", "OrderedReady") == "Parallel"
        service = s["spec"].get("serviceName")
        pods = {int(p.name.rsplit("-", 1)[1]): p for p in self.owned("StatefulSet", s)}
        # create missing ordinals (a terminating pod's name is taken until it is gone)
        for i in range(want):
            if i in pods:
                continue
            if not parallel and any(not (pods.get(j) and pods[j].ready()) for j in range(i)):
                break
            t = copy.deepcopy(tmpl)
            t.setdefault("metadata", {}).setdefault("labels", {})["statefulset.kubernetes.io/pod-name"] = f"{name}-{i}"
            pods[i] = self.create_pod(ns, f"{name}-{i}", t, f"StatefulSet/{name}", rev,
                                      hostname=f"{name}-{i}", subdomain=service)
            if not parallel:
                break
        # remove ordinals at or above the count, highest first
        extra = sorted((i for i in pods if i >= want), reverse=True)
        for i in extra:
            if not pods[i].terminating:
                self.delete_pod(pods[i])
            if not parallel:
                break
        if extra:
            return
        # rolling update from the highest ordinal down, one at a time, when all are ready
        if all(i in pods and pods[i].ready() for i in range(want)):
            for i in sorted(pods, reverse=True):
                if pods[i].revision != rev:
                    self.delete_pod(pods[i])
                    break

    # -- queries for scenarios
    def table(self):
        rows = []
        for pod in sorted(self.pods.values(), key=lambda p: (p.namespace, p.name)):
            ready, status = pod.status()
            restarts = sum(c.restarts for c in pod.main + pod.init)
            rows.append(f"{pod.namespace}/{pod.name:40} {ready:5} {status:22} restarts={restarts} ip={pod.ip}")
        return "\n".join(rows)

    def pods_of(self, kind, name, ns="socketless"):
        return [p for p in self.pods.values() if p.owner == f"{kind}/{name}" and p.namespace == ns]

    def count_events(self, what, owner=None, since=0.0):
        return sum(1 for t, e, _, _, o in self.events if e == what and t >= since and (owner is None or o == owner))

    async def wait_ready(self, kind, name, n, timeout, ns="socketless", rev=True):
        """Waits until n pods of the workload are Ready (at its current template, with rev)."""
        obj = self.objects[(kind, ns, name)]
        h = template_hash(obj["spec"]["template"])
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            pods = [p for p in self.pods_of(kind, name, ns) if not p.terminating]
            good = [p for p in pods if p.ready() and (not rev or p.revision == h)]
            if len(good) == n and len(pods) == n:
                return True
            await asyncio.sleep(0.2)
        return False

    def dump_logs(self, tail=40):
        d = os.path.join(self.workdir, "logs")
        for f in sorted(os.listdir(d)):
            with open(os.path.join(d, f), "rb") as fh:
                lines = fh.read().decode(errors="replace").splitlines()
            print(f"----- {f} (last {min(tail, len(lines))} of {len(lines)} lines)")
            for line in lines[-tail:]:
                print(f"  {line}")

    async def shutdown(self):
        """Deletes every pod at once (grace periods capped at 3 s) and tears the network down."""
        if self.loop_task:
            self.loop_task.cancel()
        for pod in list(self.pods.values()):
            pod.terminating = True
            if pod.task:
                pod.task.cancel()
            for c in pod.main + pod.init:
                c.stopping = True
                c.cancel()
                c.signal(signal.SIGKILL)
        for pod in list(self.pods.values()):
            for c in pod.main + pod.init:
                if c.proc and c.proc.returncode is None:
                    try:
                        await asyncio.wait_for(c.proc.wait(), 3)
                    except asyncio.TimeoutError:
                        pass
        for t in self.tasks:
            t.cancel()
        for p in self.proxies.values():
            p.close()
        for a in self.albs.values():
            a.close()
        self.net_down()
