#!/usr/bin/env python3
"""The pod twin's scenarios: the chart's rendered manifests run as a cluster would run them
(twin.py), driven by WebSocket clients on the host. Each scenario prints its figures and
PASS/FAIL; the run ends with `podtwin: N passed, N failed`.

    scenarios.py --chart DIR --binary PATH [--root DIR] [scenario ...]

Scenarios: ready (1), app (2), scale (3), backend-change (4). See docs/podtwin.md.
"""
import argparse
import asyncio
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "lib"))
import twin  # noqa: E402
from checklib import MOTO_ATOMIC, free_port  # noqa: E402
from twin import Cluster, log, render  # noqa: E402

SECRET = "podtwin-shared-secret-0123"
TABLE = "socketless-sessions"
MOTO_URL = "http://dynamodb.dynamodb.svc:8000"
AWS_ENV = [{"name": "AWS_ACCESS_KEY_ID", "value": "podtwin"}, {"name": "AWS_SECRET_ACCESS_KEY", "value": "podtwin"}]
STEP_TIMEOUT = 40  # seconds a rollout or a readiness wait may take before the scenario fails


class Check:
    def __init__(self):
        self.results = []

    def __call__(self, name, ok, figure=""):
        self.results.append((name, bool(ok), figure))
        print(f"    {'ok  ' if ok else 'FAIL'} {name}{': ' + str(figure) if figure != '' else ''}", flush=True)
        return ok

    def passed(self):
        return bool(self.results) and all(ok for _, ok, _ in self.results)


# ---------------------------------------------------------------------------------------------
# Clients


class Client:
    """One WebSocket client: sends a numbered message every `period` seconds and expects a frame
    carrying it back within 5 s. Counts replies, misses and error frames; keeps its close code."""

    def __init__(self, url, name, period=1.0):
        self.url, self.name, self.period = url, name, period
        self.ok = self.missed = self.error_frames = 0
        self.miss_times = []
        self.close_code = None
        self.closed_at = None
        self.connect_error = None
        self.local = None
        self.task = None
        self.ws = None
        self.stop = False

    async def run(self):
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed
        try:
            self.ws = await asyncio.wait_for(connect(self.url, open_timeout=5, ping_interval=None), 10)
        except Exception as e:
            self.connect_error = repr(e)
            return
        self.local = self.ws.transport.get_extra_info("sockname")
        waiting = {"token": None, "event": asyncio.Event()}

        async def reader():
            try:
                async for msg in self.ws:
                    if '"message"' in msg and "Internal server error" in msg:
                        self.error_frames += 1
                    if waiting["token"] and waiting["token"] in msg:
                        waiting["event"].set()
            except ConnectionClosed:
                pass
            waiting["event"].set()

        rt = asyncio.ensure_future(reader())
        n = 0
        try:
            while not self.stop:
                n += 1
                token = f"{self.name}-{n}"
                waiting["token"] = token
                waiting["event"].clear()
                await self.ws.send(token)
                try:
                    await asyncio.wait_for(waiting["event"].wait(), 5)
                except asyncio.TimeoutError:
                    pass
                if rt.done():
                    break
                if waiting["event"].is_set():
                    self.ok += 1
                else:
                    self.missed += 1
                    self.miss_times.append(time.monotonic())
                await asyncio.sleep(self.period * random.uniform(0.8, 1.2))
        except ConnectionClosed:
            pass
        finally:
            if self.ws.close_code is not None and self.close_code is None and not self.stop:
                self.close_code = self.ws.close_code
                self.closed_at = time.monotonic()
            rt.cancel()

    def start(self):
        self.task = asyncio.ensure_future(self.run())
        return self

    def disconnected(self):
        return self.close_code is not None or (self.task and self.task.done() and not self.stop)

    async def close(self):
        self.stop = True
        if self.ws is not None and self.close_code is None:
            try:
                await asyncio.wait_for(self.ws.close(), 3)
            except Exception:
                pass
        if self.task:
            try:
                await asyncio.wait_for(self.task, 8)
            except Exception:
                pass


async def close_all(clients):
    await asyncio.gather(*(c.close() for c in clients))


async def start_clients(url, prefix, n, period=1.0):
    clients = [Client(url, f"{prefix}{i}", period).start() for i in range(n)]
    end = time.monotonic() + 15
    while time.monotonic() < end and any(c.local is None and c.connect_error is None for c in clients):
        await asyncio.sleep(0.1)
    return clients


async def echo(url, text="podtwin-hello"):
    c = Client(url, text, period=0.2)
    c.start()
    end = time.monotonic() + 12
    while time.monotonic() < end and c.ok == 0 and not (c.task.done()):
        await asyncio.sleep(0.1)
    await c.close()
    return c.ok > 0, c.connect_error or c.close_code


# ---------------------------------------------------------------------------------------------
# One cluster per case


class Env:
    def __init__(self, opts, case, check):
        self.opts, self.case, self.check = opts, case, check
        self.failures = sum(1 for _, ok, _ in check.results if not ok)
        self.workdir = os.path.join(opts.workdir, case)
        os.makedirs(self.workdir, exist_ok=True)
        self.procs = []
        self.cluster = None

    def images(self):
        py = self.opts.app_python
        return {
            "podtwin/moto": {"entrypoint": [sys.executable, MOTO_ATOMIC]},
            "podtwin/node-app": {"entrypoint": ["node"]},
            "podtwin/flask-app": {"entrypoint": [py["python"]], "env": py["env"]},
            self.opts.image: {"entrypoint": [self.opts.binary]},
        }

    async def __aenter__(self):
        twin.Cluster.clean_leftovers()
        self.cluster = Cluster(self.workdir, self.images(), lag=self.opts.lag)
        self.cluster.net_up()
        await self.cluster.run()
        return self

    async def __aexit__(self, *exc):
        for p in self.procs:
            if p.returncode is None:
                p.terminate()
                try:
                    await asyncio.wait_for(p.wait(), 5)
                except asyncio.TimeoutError:
                    p.kill()
                    await p.wait()
        print(f"    (harness event loop: longest delay {getattr(self.cluster, 'max_lag', 0) * 1000:.0f} ms)")
        failed = sum(1 for _, ok, _ in self.check.results if not ok) > self.failures or exc[0] is not None
        if failed and self.opts.verbose_logs:
            self.show()
            self.cluster.dump_logs(30)
        await self.cluster.shutdown()

    async def moto(self):
        """DynamoDB (moto) as its own Deployment and Service, dynamodb.dynamodb.svc:8000."""
        labels = {"app": "dynamodb"}
        docs = [
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "dynamodb", "namespace": "dynamodb"},
             "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
                 "metadata": {"labels": labels},
                 "spec": {"containers": [{"name": "moto", "image": "podtwin/moto",
                                          "args": ["-H", "0.0.0.0", "-p", "8000"],
                                          "ports": [{"name": "http", "containerPort": 8000}],
                                          "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 1}}]}}}},
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "dynamodb", "namespace": "dynamodb"},
             "spec": {"selector": labels, "ports": [{"name": "http", "port": 8000, "targetPort": "http"}]}},
        ]
        await self.cluster.apply(docs)
        if not await self.cluster.wait_ready("Deployment", "dynamodb", 1, 30, ns="dynamodb"):
            raise twin.TwinError("moto never became ready")
        ip = self.cluster.cluster_ips[("dynamodb", "dynamodb")]
        self.moto_url = f"http://{ip}:8000"
        await asyncio.to_thread(self.create_table)

    def dynamodb(self):
        if getattr(self, "_db", None) is None:
            self._db = self.new_dynamodb()
        return self._db

    def new_dynamodb(self):
        import boto3
        return boto3.client("dynamodb", endpoint_url=self.moto_url, region_name="us-east-1",
                            aws_access_key_id="podtwin", aws_secret_access_key="podtwin")

    def create_table(self):
        """The two tables cfn/websocket-api.yml makes (the chart's default names): sessions, and
        group memberships (the Flask example joins every connection to a room at connect)."""
        db = self.dynamodb()
        db.create_table(TableName=TABLE, BillingMode="PAY_PER_REQUEST",
                        AttributeDefinitions=[{"AttributeName": "connectionId", "AttributeType": "S"}],
                        KeySchema=[{"AttributeName": "connectionId", "KeyType": "HASH"}])
        keys = [{"AttributeName": "group", "KeyType": "HASH"}, {"AttributeName": "connectionId", "KeyType": "RANGE"}]
        db.create_table(TableName=f"{TABLE}-groups", BillingMode="PAY_PER_REQUEST",
                        AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"} for n in ("group", "connectionId")],
                        KeySchema=keys,
                        GlobalSecondaryIndexes=[{"IndexName": "byConnection", "KeySchema": keys[::-1],
                                                 "Projection": {"ProjectionType": "KEYS_ONLY"}}])

    def session_ids(self):
        db = self.dynamodb()
        items, kw = [], {}
        while True:
            r = db.scan(TableName=TABLE, ConsistentRead=True, ProjectionExpression="connectionId", **kw)
            items += [i["connectionId"]["S"] for i in r["Items"]]
            if "LastEvaluatedKey" not in r:
                return set(items)
            kw["ExclusiveStartKey"] = r["LastEvaluatedKey"]

    def render(self, values_files=(), values=None):
        files = [os.path.join(self.opts.chart, f) if not os.path.isabs(f) else f for f in values_files]
        return render(self.opts.chart, files, values)

    async def apply_chart(self, values_files=(), values=None, extra=()):
        docs = await asyncio.to_thread(self.render, values_files, values)
        await self.cluster.apply(list(extra) + docs)
        return docs

    async def host_gateway(self, integration_uri, stage="prod"):
        """The API Gateway stand-in: socketless gateway on the host, 127.0.0.1."""
        port = free_port()
        logf = open(os.path.join(self.workdir, "logs", "host-gateway.log"), "wb")
        p = await asyncio.create_subprocess_exec(
            self.opts.binary, "gateway", "--listen", f"127.0.0.1:{port}", "--param", f"IntegrationUri={integration_uri}",
            "--param", f"SharedSecret={SECRET}", "--param", f"StageName={stage}", "--param", "DisconnectContext=true",
            stdout=logf, stderr=logf)
        logf.close()
        self.procs.append(p)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            if await twin.http_probe("127.0.0.1", port, "/readyz", 1):
                return f"ws://127.0.0.1:{port}/{stage}"
            await asyncio.sleep(0.1)
        raise twin.TwinError("the host gateway never answered /readyz")

    def unready(self):
        """Pods not Ready, as kubectl shows them: the figure of a failed readiness check."""
        bad = [f"{p.name} {' '.join(p.status())}" for p in self.cluster.pods.values() if not p.ready()]
        return f"not ready: {', '.join(sorted(bad))}" if bad else "all Ready"

    def show(self):
        print("    pods:")
        for line in self.cluster.table().splitlines():
            print(f"      {line}")


def base_values(extra=None):
    v = {"config": {"region": "us-east-1", "dynamodbEndpoint": MOTO_URL}, "extraEnv": AWS_ENV,
         "sharedSecret": {"value": SECRET}}
    return twin.merge(v, extra or {})


KIND = "examples/kind-nodeport-gateway.yaml"
EKS = "examples/eks-irsa-alb.yaml"


# ---------------------------------------------------------------------------------------------
# 1. defaults, EKS, kind: pods Ready, an echo through the front door


async def s_ready(opts, check):
    async with Env(opts, "ready-defaults", check) as env:
        print("  defaults (+ shared secret, DynamoDB = moto), front door: a host gateway → the Service's ClusterIP")
        await env.moto()
        await env.apply_chart(values=base_values())
        ok = await env.cluster.wait_ready("Deployment", "socketless", 2, STEP_TIMEOUT)
        env.show()
        if check("defaults: 2 backend pods Ready", ok, env.unready()):
            ip = env.cluster.cluster_ips[("socketless", "socketless")]
            url = await env.host_gateway(f"http://{ip}:8080")
            good, why = await echo(url)
            check("defaults: echo through host gateway → ClusterIP", good, why or "reply received")

    async with Env(opts, "ready-eks", check) as env:
        print("  EKS example (+ existingSecret object, DynamoDB = moto, static credentials in place of IRSA)")
        await env.moto()
        secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "socketless-shared-secret",
                                                                     "namespace": "socketless"},
                  "stringData": {"shared-secret": SECRET}}
        await env.apply_chart([EKS], {"config": {"dynamodbEndpoint": MOTO_URL}, "extraEnv": AWS_ENV}, extra=[secret])
        ok = await env.cluster.wait_ready("Deployment", "socketless", 2, STEP_TIMEOUT)
        env.show()
        check("eks: 2 backend pods Ready (KEDA minReplicaCount)", ok, env.unready())
        err = env.cluster.alb_errors.get(("socketless", "socketless"))
        alb = env.cluster.albs.get(("socketless", "socketless"))
        if check("eks: the ALB's target group is created", alb is not None, err or f"ALB twin on 127.0.0.1:{alb.port}"):
            end = time.monotonic() + alb.interval * (alb.healthy_n + 1) + 10
            while time.monotonic() < end and alb.healthy_count() < 2:
                await asyncio.sleep(0.5)
            check("eks: healthy ALB targets", alb.healthy_count() == 2, alb.healthy_count())
            url = await env.host_gateway(f"http://127.0.0.1:{alb.port}")
            good, why = await echo(url)
            check("eks: echo through API Gateway stand-in → ALB twin → pod IPs", good, why or "reply received")
            check("eks: ALB answered 502/503", alb.counts["502"] + alb.counts["503"] == 0, alb.counts)
            # A backend pod terminated under load: the ALB keeps sending it new requests until the
            # controller's lag has passed, so the pod must keep serving at least that long.
            clients = await start_clients(url, "eks", 10, period=0.25)
            await asyncio.sleep(2)
            victim = sorted(env.cluster.pods_of("Deployment", "socketless"), key=lambda p: p.name)[0]
            log(f"SIGTERM (pod deletion) of {victim.name} behind the ALB twin, under load")
            before = dict(alb.counts)
            env.cluster.delete_pod(victim)
            end = time.monotonic() + 70
            while time.monotonic() < end and not victim.gone:
                await asyncio.sleep(0.2)
            await asyncio.sleep(2)
            await close_all(clients)
            sent = sum(c.ok + c.missed for c in clients)
            errors = sum(c.missed + c.error_frames for c in clients) + sum(
                1 for c in clients if c.close_code is not None or c.connect_error)
            bad = {k: alb.counts[k] - before[k] for k in ("502", "503")}
            check("eks: client-visible errors while a backend pod terminates behind the ALB", errors == 0,
                  f"{errors} of {sent} messages; ALB {bad}; pod exit codes "
                  f"{[(c.name, c.exit_code) for c in victim.main]}")

    async with Env(opts, "ready-kind", check) as env:
        print("  kind example: the in-chart gateway through its NodePort")
        await env.moto()
        await env.apply_chart([KIND], {"extraEnv": AWS_ENV})
        ok1 = await env.cluster.wait_ready("Deployment", "socketless", 3, STEP_TIMEOUT)
        ok2 = await env.cluster.wait_ready("StatefulSet", "socketless-gateway", 1, STEP_TIMEOUT)
        env.show()
        check("kind: 3 backend pods and 1 gateway pod Ready", ok1 and ok2, env.unready())
        if ok1 and ok2:
            good, why = await echo("ws://127.0.0.1:30081/dev")
            check("kind: echo through NodePort 127.0.0.1:30081 → gateway → backend", good, why or "reply received")


# ---------------------------------------------------------------------------------------------
# 2. the app sidecar (Node, Flask): Ready, replies, a SIGTERM under load without errors


async def s_app(opts, check):
    root = opts.root
    for lang, image, cmd in (
            ("node", "podtwin/node-app", ["node", os.path.join(root, "examples/node/server.js")]),
            ("flask", "podtwin/flask-app", [opts.app_python["python"], os.path.join(root, "examples/python-flask/app.py")])):
        async with Env(opts, f"app-{lang}", check) as env:
            print(f"  app.enabled with examples/{'node' if lang == 'node' else 'python-flask'} (kind example)")
            await env.moto()
            values = {"extraEnv": AWS_ENV, "replicaCount": 2,
                      "app": {"enabled": True, "image": {"repository": image, "tag": "latest"},
                              "command": cmd, "startupSeconds": 20}}
            await env.apply_chart([KIND], values)
            ok = await env.cluster.wait_ready("Deployment", "socketless", 2, STEP_TIMEOUT)
            ok = ok and await env.cluster.wait_ready("StatefulSet", "socketless-gateway", 1, STEP_TIMEOUT)
            env.show()
            pods = env.cluster.pods_of("Deployment", "socketless")
            sp = [c.probe_counts["startup"] for p in pods for c in p.init]
            check(f"{lang}: 2 backend pods and the gateway Ready", ok,
                  f"{env.unready()}; app startup probes (ok, failed) per pod: {sp}")
            if not ok:
                continue
            good, why = await echo("ws://127.0.0.1:30081/dev")
            check(f"{lang}: a reply from the app", good, why or "reply received")
            clients = await start_clients("ws://127.0.0.1:30081/dev", f"{lang}", 16, period=0.25)
            await asyncio.sleep(3)
            victim = sorted(env.cluster.pods_of("Deployment", "socketless"), key=lambda p: p.name)[0]
            log(f"SIGTERM (pod deletion) of {victim.name} under load")
            env.cluster.delete_pod(victim)
            end = time.monotonic() + 30
            while time.monotonic() < end and not victim.gone:
                await asyncio.sleep(0.2)
            await asyncio.sleep(3)
            await close_all(clients)
            sent = sum(c.ok + c.missed for c in clients)
            errors = sum(c.missed + c.error_frames for c in clients) + sum(
                1 for c in clients if c.close_code is not None or c.connect_error)
            check(f"{lang}: the terminated pod is gone within its grace period", victim.gone,
                  f"exit codes {[(c.name, c.exit_code) for c in victim.main + victim.init]}")
            check(f"{lang}: client-visible errors during the SIGTERM", errors == 0,
                  f"{errors} of {sent} messages (missed replies, error frames, closed clients)")


# ---------------------------------------------------------------------------------------------
# 3. gateway 2 → 3 → 2 under 60 clients, replyMode async


def ordinal_of(cid):
    import base64
    try:
        b = base64.urlsafe_b64decode(cid)
    except Exception:
        return None
    return b[0] ^ b[10] if len(b) == 11 else None


class SessionWatch:
    """Polls the sessions table; records every id that disappears, with the time."""

    def __init__(self, env):
        self.env, self.seen, self.gone = env, set(), []
        self.task = asyncio.ensure_future(self.run())

    async def run(self):
        while True:
            try:
                ids = await asyncio.to_thread(self.env.session_ids)
            except Exception:
                await asyncio.sleep(0.3)
                continue
            now = time.monotonic()
            for cid in self.seen - ids:
                self.gone.append((now, cid))
            self.seen = ids
            await asyncio.sleep(0.5)

    def stop(self):
        self.task.cancel()


def holder(env, client):
    """The gateway pod a client's connection went to (from the NodePort proxy's record)."""
    proxy = env.cluster.proxies[("socketless", "socketless-gateway")]
    for peer, pod in proxy.connections:
        if client.local and peer and tuple(peer[:2]) == tuple(client.local[:2]):
            return pod
    return None


async def s_scale(opts, check):
    async with Env(opts, "scale", check) as env:
        print("  kind example, replyMode async, gateway 2 → 3 → 2 with 60 clients")
        await env.moto()
        values = {"extraEnv": AWS_ENV, "replicaCount": 2, "config": {"replyMode": "async"},
                  "gateway": {"replicaCount": 2}}
        await env.apply_chart([KIND], values)
        ok = await env.cluster.wait_ready("StatefulSet", "socketless-gateway", 2, STEP_TIMEOUT)
        ok = ok and await env.cluster.wait_ready("Deployment", "socketless", 2, STEP_TIMEOUT)
        env.show()
        if not check("2 gateway pods and 2 backend pods Ready", ok, env.unready()):
            return
        gw = "StatefulSet/socketless-gateway"
        url = "ws://127.0.0.1:30081/dev"
        first = await start_clients(url, "a", 40)
        watch = SessionWatch(env)
        await asyncio.sleep(3)
        check("40 clients connected", sum(1 for c in first if c.local) == 40,
              sum(1 for c in first if c.local))

        t_up = time.monotonic()
        log("scale-up: gateway.replicaCount=3")
        await env.apply_chart([KIND], twin.merge(values, {"gateway": {"replicaCount": 3}}))
        settled = await env.cluster.wait_ready("StatefulSet", "socketless-gateway", 3, 90)
        t_settled = time.monotonic()
        await asyncio.sleep(2)
        env.show()
        replaced_up = env.cluster.count_events("terminating", gw, since=t_up)
        cut_up = [c for c in first if c.disconnected()]
        check("scale-up settles (3 gateway pods Ready)", settled)
        check("gateway pods replaced by the scale-up", replaced_up == 0, replaced_up)
        check("clients disconnected by the scale-up", len(cut_up) == 0,
              f"{len(cut_up)} of 40 (close codes {sorted(set(c.close_code for c in cut_up), key=str)})")

        second = await start_clients(url, "b", 20)
        await asyncio.sleep(3)
        everyone = [c for c in first + second if not c.disconnected()]
        on2 = [c for c in everyone if holder(env, c) == "socketless-gateway-2"]
        errs = sorted(set(c.connect_error for c in second if c.connect_error))
        check("clients held by replica 2 after the scale-up", len(on2) > 0,
              f"{len(on2)} of {len(everyone)} connected; new clients connected "
              f"{sum(1 for c in second if c.local)} of 20{', errors ' + str(errs[:2]) if errs else ''}")

        t_down = time.monotonic()
        log("scale-down: gateway.replicaCount=2")
        await env.apply_chart([KIND], values)
        end = time.monotonic() + 60
        while time.monotonic() < end and (any(p.name == "socketless-gateway-2" for p in env.cluster.pods.values())
                                          or not await env.cluster.wait_ready("StatefulSet", "socketless-gateway", 2, 0.5)):
            await asyncio.sleep(0.5)
        await asyncio.sleep(3)
        env.show()
        replaced_down = env.cluster.count_events("terminating", gw, since=t_down)
        closed = [c for c in everyone if c.disconnected()]
        closed2 = [c for c in closed if c in on2]
        others_closed = [c for c in closed if c not in on2]
        check("replica 2's clients closed with 1001 on the scale-down",
              len(closed2) == len(on2) and all(c.close_code == 1001 for c in closed2),
              f"{len(closed2)} of {len(on2)} closed, codes {sorted(set(c.close_code for c in closed2), key=str)}")
        check("other clients closed on the scale-down", len(others_closed) == 0,
              f"{len(others_closed)} (codes {sorted(set(c.close_code for c in others_closed), key=str)})")
        check("gateway pods deleted by the scale-down (only replica 2)", replaced_down == 1, replaced_down)
        def misses(clients, a, b):
            return sum(1 for c in clients for t in c.miss_times if a <= t < b)
        phases = {"before the scale-up": (0, t_up), "scale-up": (t_up, t_settled),
                  "after it": (t_settled, t_down), "scale-down": (t_down, time.monotonic())}
        kept = [c for c in first + second if c not in on2]
        per = {k: misses(kept, a, b) for k, (a, b) in phases.items()}
        check("replies missed by the clients of replicas 0 and 1", sum(per.values()) == 0,
              f"{sum(per.values())} of {sum(c.ok + c.missed for c in kept)}: {per}")
        watch.stop()
        # A session deleted while its client is connected: an id gone from the table whose replica
        # still held all its clients then (replica 2's ids may go once its clients are closed).
        first_close2 = min((c.closed_at for c in closed2 if c.closed_at), default=float("inf"))
        bad = [(t, cid) for t, cid in watch.gone
               if ordinal_of(cid) != 2 or t < first_close2 - 0.5]
        bad = [(t, cid) for t, cid in bad if not any(c.closed_at and c.closed_at <= t + 0.5 for c in first + second
                                                     if holder(env, c) == f"socketless-gateway-{ordinal_of(cid)}")]
        check("sessions deleted while their client was connected", len(bad) == 0,
              f"{len(bad)} (ids gone from the table: {len(watch.gone)})")
        await close_all(first + second)


# ---------------------------------------------------------------------------------------------
# 4. a backend-only value change with clients connected


async def s_backend_change(opts, check):
    async with Env(opts, "backend-change", check) as env:
        print("  kind example, 2 gateways; config.sessionTtl, then app.image.tag, changed with clients connected")
        await env.moto()
        values = {"extraEnv": AWS_ENV, "replicaCount": 2, "gateway": {"replicaCount": 2}}
        await env.apply_chart([KIND], values)
        ok = await env.cluster.wait_ready("StatefulSet", "socketless-gateway", 2, STEP_TIMEOUT)
        ok = ok and await env.cluster.wait_ready("Deployment", "socketless", 2, STEP_TIMEOUT)
        if not check("2 gateway pods and 2 backend pods Ready", ok, env.unready()):
            env.show()
            return
        gw = "StatefulSet/socketless-gateway"
        clients = await start_clients("ws://127.0.0.1:30081/dev", "c", 20)
        await asyncio.sleep(2)
        for what, change in (("config.sessionTtl=3h", {"config": {"sessionTtl": "3h"}}),
                             ("app.image.tag=2.0.0", {"config": {"sessionTtl": "3h"},
                                                      "app": {"image": {"repository": "podtwin/node-app",
                                                                        "tag": "2.0.0"}}})):
            t0 = time.monotonic()
            log(f"apply {what}")
            values = twin.merge(values, change)
            await env.apply_chart([KIND], values)
            await env.cluster.wait_ready("Deployment", "socketless", 2, STEP_TIMEOUT)
            await env.cluster.wait_ready("StatefulSet", "socketless-gateway", 2, STEP_TIMEOUT)
            await asyncio.sleep(2)
            env.show()
            replaced = env.cluster.count_events("terminating", gw, since=t0)
            backend = env.cluster.count_events("terminating", "Deployment/socketless", since=t0)
            cut = [c for c in clients if c.disconnected()]
            check(f"{what}: gateway pods replaced", replaced == 0, f"{replaced} (backend pods replaced: {backend})")
            check(f"{what}: gateway clients disconnected", len(cut) == 0,
                  f"{len(cut)} of {len(clients)} (codes {sorted(set(c.close_code for c in cut), key=str)})")
        await close_all(clients)


SCENARIOS = {"ready": s_ready, "app": s_app, "scale": s_scale, "backend-change": s_backend_change}


def app_python():
    """The interpreter for the Flask sidecar: the venv's, when the containers' uid can run it;
    otherwise the system python3 of the same version with the venv's site-packages."""
    venv_py = sys.executable
    site = [p for p in sys.path if p.endswith("site-packages")]
    r = subprocess.run(["setpriv", "--reuid", "65532", "--regid", "65532", "--clear-groups", "--", venv_py,
                        "-c", "import flask"], capture_output=True)
    if r.returncode == 0:
        return {"python": venv_py, "env": {}}
    sysp = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    return {"python": sysp, "env": {"PYTHONPATH": ":".join(site)}}


async def main_async(opts, names):
    results = []
    for name in names:
        print(f"\n=== scenario {name}", flush=True)
        check = Check()
        t0 = time.monotonic()
        try:
            await asyncio.wait_for(SCENARIOS[name](opts, check), opts.scenario_timeout)
        except asyncio.TimeoutError:
            check("finished within the time bound", False, f"{opts.scenario_timeout}s")
        except Exception as e:
            traceback.print_exc()
            check("ran without an error", False, repr(e))
        ok = check.passed()
        print(f"=== {name}: {'PASS' if ok else 'FAIL'} ({time.monotonic() - t0:.0f} s)", flush=True)
        results.append(ok)
    return results


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(os.path.dirname(here)))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chart", default=os.path.join(root, "chart", "socketless"))
    ap.add_argument("--binary", default=os.path.join(root, "target", "debug", "socketless"))
    ap.add_argument("--root", default=root, help="where examples/ are")
    ap.add_argument("--lag", type=float, default=10.0, help="the load balancer controller's lag (s)")
    ap.add_argument("--scenario-timeout", type=float, default=150.0)
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    ap.add_argument("--quiet-logs", dest="verbose_logs", action="store_false")
    ap.add_argument("scenarios", nargs="*", default=list(SCENARIOS))
    opts = ap.parse_args()
    for s in opts.scenarios:
        if s not in SCENARIOS:
            ap.error(f"unknown scenario {s} (known: {', '.join(SCENARIOS)})")
    if os.geteuid() != 0:
        ap.error("the pod twin needs root (ip netns); run it through ci/e2e/podtwin/run.sh")
    opts.binary = os.path.abspath(opts.binary)
    opts.chart = os.path.abspath(opts.chart)
    with open(os.path.join(opts.chart, "values.yaml")) as f:
        opts.image = yaml.safe_load(f)["image"]["repository"]
    opts.app_python = app_python()
    opts.workdir = tempfile.mkdtemp(prefix="podtwin-")
    print(f"podtwin: chart {opts.chart}, binary {opts.binary}, work {opts.workdir}")
    try:
        results = asyncio.run(main_async(opts, opts.scenarios))
    finally:
        twin.Cluster.clean_leftovers()
        if not opts.keep:
            shutil.rmtree(opts.workdir, ignore_errors=True)
    passed = sum(results)
    print(f"\npodtwin: {passed} passed, {len(results) - passed} failed")
    sys.exit(0 if passed == len(results) else 1)


if __name__ == "__main__":
    main()
