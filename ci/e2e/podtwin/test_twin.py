"""Unit tests of the pod twin's own rules (no root, no network): what a controller counts as a
template change, $(VAR) expansion, rolling-update arithmetic, the ALB twin's health-check
settings and refusal, image matching, service-link variables and kubectl's pod status.

    python3 -m unittest ci/e2e/podtwin/test_twin.py
"""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import twin  # noqa: E402


def ingress(annotations):
    return {"metadata": {"name": "web", "namespace": "ns", "annotations": annotations},
            "spec": {"ingressClassName": "alb", "rules": [{"http": {"paths": [
                {"path": "/connect", "pathType": "Exact",
                 "backend": {"service": {"name": "web", "port": {"name": "http"}}}}]}}]}}


class Rules(unittest.TestCase):
    def test_any_byte_of_the_template_is_a_new_revision(self):
        a = {"metadata": {"annotations": {"checksum/config": "1"}}, "spec": {"containers": [{"name": "x"}]}}
        b = {"metadata": {"annotations": {"checksum/config": "2"}}, "spec": {"containers": [{"name": "x"}]}}
        self.assertNotEqual(twin.template_hash(a), twin.template_hash(b))
        reordered = {"spec": {"containers": [{"name": "x"}]}, "metadata": {"annotations": {"checksum/config": "1"}}}
        self.assertEqual(twin.template_hash(a), twin.template_hash(reordered))

    def test_kubernetes_variable_expansion(self):
        env = {"SECRET": "s3", "PORT": "80"}
        self.assertEqual(twin.expand("SharedSecret=$(SECRET)", env), "SharedSecret=s3")
        self.assertEqual(twin.expand("$(PORT)/$(MISSING)", env), "80/$(MISSING)")
        self.assertEqual(twin.expand("$$(SECRET)", env), "$(SECRET)")

    def test_rolling_update_arithmetic(self):
        self.assertEqual(twin.intorpct("25%", 3, True), 1)
        self.assertEqual(twin.intorpct("25%", 3, False), 0)
        self.assertEqual(twin.intorpct(1, 3, False), 1)

    def test_selector(self):
        self.assertTrue(twin.matches({"a": "1"}, {"a": "1", "b": "2"}))
        self.assertFalse(twin.matches({"a": "1"}, {"a": "2"}))
        self.assertFalse(twin.matches({}, {"a": "1"}))


class Alb(unittest.TestCase):
    def test_interval_equal_to_timeout_is_refused_with_elbv2s_message(self):
        with self.assertRaises(twin.TwinError) as e:
            twin.AlbTwin(None, ingress({"alb.ingress.kubernetes.io/target-type": "ip",
                                        "alb.ingress.kubernetes.io/healthcheck-interval-seconds": "5"}), 10)
        self.assertIn("Health check interval must be greater than the timeout", str(e.exception))

    def test_controller_defaults_and_annotations(self):
        alb = twin.AlbTwin(None, ingress({"alb.ingress.kubernetes.io/target-type": "ip",
                                          "alb.ingress.kubernetes.io/load-balancer-attributes":
                                              "idle_timeout.timeout_seconds=75",
                                          "alb.ingress.kubernetes.io/success-codes": "200-204"}), 10)
        self.assertEqual((alb.interval, alb.timeout, alb.healthy_n, alb.unhealthy_n, alb.path), (15, 5, 2, 2, "/"))
        self.assertEqual(alb.idle, 75)
        self.assertEqual(alb.codes, {200, 201, 202, 203, 204})
        self.assertTrue(alb.route("/connect"))
        self.assertFalse(alb.route("/connect/x"))


class Cluster(unittest.TestCase):
    def setUp(self):
        import tempfile
        self.tmp = tempfile.mkdtemp()
        self.c = twin.Cluster(self.tmp, {"socketless": {"entrypoint": ["/bin/socketless"]}})

    def tearDown(self):
        import shutil
        shutil.rmtree(self.tmp)

    def test_an_image_matches_its_repository_in_any_registry(self):
        self.assertEqual(self.c.image_config("socketless:0.1.0")["entrypoint"], ["/bin/socketless"])
        self.assertEqual(self.c.image_config("123.dkr.ecr.us-east-1.amazonaws.com/socketless@sha256:ab")["entrypoint"],
                         ["/bin/socketless"])
        with self.assertRaises(twin.TwinError):
            self.c.image_config("socketless-other:1")

    def test_service_links_are_named_as_the_kubelet_names_them(self):
        svc = {"metadata": {"name": "socketless-gateway", "namespace": "ns"},
               "spec": {"ports": [{"name": "ws", "port": 8081}]}}
        self.c.objects[("Service", "ns", "socketless-gateway")] = svc
        self.c.cluster_ips[("ns", "socketless-gateway")] = "10.0.0.9"
        env = self.c.service_links("ns")
        self.assertEqual(env["SOCKETLESS_GATEWAY_SERVICE_HOST"], "10.0.0.9")
        self.assertEqual(env["SOCKETLESS_GATEWAY_PORT"], "tcp://10.0.0.9:8081")
        self.assertEqual(env["SOCKETLESS_GATEWAY_SERVICE_PORT_WS"], "8081")
        self.assertEqual(env["SOCKETLESS_GATEWAY_PORT_8081_TCP_ADDR"], "10.0.0.9")
        self.assertEqual(self.c.service_links("other"), {})

    def test_pod_status_as_kubectl_prints_it(self):
        tmpl = {"spec": {"initContainers": [{"name": "app", "image": "socketless", "restartPolicy": "Always"}],
                         "containers": [{"name": "serve", "image": "socketless"}]}}
        pod = twin.Pod(self.c, "ns", "p", tmpl, "Deployment/p", "r")
        self.assertEqual(pod.status(), ("0/2", "Init:0/1"))
        pod.init_done, pod.phase = 1, "Running"
        self.assertEqual(pod.status(), ("0/2", "Running"))
        pod.terminating = True
        self.assertEqual(pod.status()[1], "Terminating")
        self.assertFalse(pod.ready())

    def test_secret_and_field_references(self):
        import base64
        self.c.objects[("Secret", "ns", "s")] = {"data": {"k": base64.b64encode(b"v").decode()}}
        pod = twin.Pod(self.c, "ns", "p-0", {"spec": {"containers": [{"name": "c", "image": "socketless"}]}}, "x", "r")
        pod.ip = "10.213.7.10"
        self.assertEqual(self.c.value_from(pod, {"secretKeyRef": {"name": "s", "key": "k"}}), "v")
        self.assertEqual(self.c.value_from(pod, {"fieldRef": {"fieldPath": "metadata.name"}}), "p-0")
        self.assertEqual(self.c.value_from(pod, {"fieldRef": {"fieldPath": "status.podIP"}}), "10.213.7.10")
        with self.assertRaises(twin.TwinError):
            self.c.value_from(pod, {"secretKeyRef": {"name": "missing", "key": "k"}})


if __name__ == "__main__":
    unittest.main()
