#!/usr/bin/env python3
"""Offline checks of the Helm chart in helm/presence-node (run by scripts/check-chart.sh).

No cluster, no helm binary: helm-python-sdk embeds Helm's Go SDK (lint, render) and
kubernetes-validate carries the Kubernetes JSON schemas. For every tests/chart/values-*.yaml the
chart is linted, rendered, every manifest is validated strictly against the Kubernetes 1.30
schemas (ServiceMonitor, a CRD, gets a shape check instead), and the deployment invariants the
node relies on are asserted. Values that must be refused are rendered too, and must fail.

Plain Python: each check is a function; the run prints one line per check and a summary, and
exits 1 if any check failed.
"""

from __future__ import annotations

import base64
import copy
import re
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

import helm_python as helm
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "helm" / "presence-node"
VALUES_DIR = Path(__file__).resolve().parent
KUBE_VERSION = "1.30"
RELEASE = "presence-node"
NAMESPACE = "presence"

GRPC_PORT = 50051
READINESS_SERVICE = "presence.v1.PresenceService"
# Liveness (and startup) ask for the overall service "": the process, SERVING until the drain,
# never affected by Redis (API.md "Health: liveness is the process, readiness is the service").
LIVENESS_SERVICE = ""
# A liveness probe must tolerate at least this long without an answer before a restart
# (periodSeconds * failureThreshold): a GC-free Rust node answers in microseconds, so only a
# stuck process fails it; short budgets restart pods under CPU starvation.
MIN_LIVENESS_BUDGET_S = 20
# What the values files and checks use as a JWT key (auth.mode is jwt by default).
JWT = {"auth": {"jwt": {"secret": "test-hs256-secret-not-a-real-one"}}}
# What the node uses when PRESENCE_SHUTDOWN_GRACE_MS is unset (README configuration table).
NODE_DEFAULT_SHUTDOWN_GRACE_MS = 20000

# Env names that look secret. Such a variable must come from valueFrom (a Secret), never from a
# literal `value`, unless listed in DOCUMENTED_NON_SECRET_ENV with the reason.
SECRET_LOOKING = re.compile(r"SECRET|TOKEN|PASSWORD|REDIS_URL", re.IGNORECASE)
DOCUMENTED_NON_SECRET_ENV: dict[str, str] = {}

# Fields a ServiceMonitor (monitoring.coreos.com/v1) may carry that the chart uses or that users
# commonly add; anything else is a typo the Prometheus Operator would reject.
SERVICEMONITOR_SPEC_KEYS = {
    "jobLabel", "namespaceSelector", "selector", "endpoints", "targetLabels",
    "podTargetLabels", "sampleLimit", "attachMetadata",
}
SERVICEMONITOR_ENDPOINT_KEYS = {
    "port", "targetPort", "path", "scheme", "interval", "scrapeTimeout", "honorLabels",
    "honorTimestamps", "relabelings", "metricRelabelings", "tlsConfig", "authorization",
    "bearerTokenSecret", "params", "followRedirects", "enableHttp2",
}
PROMETHEUS_DURATION = re.compile(r"^((\d+)y)?((\d+)w)?((\d+)d)?((\d+)h)?((\d+)m)?((\d+)s)?((\d+)ms)?$")


# --------------------------------------------------------------------------------------------
# Rendering helpers


class Rendered:
    """The manifests of one render, parsed."""

    def __init__(self, values: dict[str, Any], manifests: dict[str, str]):
        self.values = values
        self.notes = ""
        self.docs: list[tuple[str, dict[str, Any]]] = []
        for path, text in sorted(manifests.items()):
            if path.endswith("NOTES.txt"):
                self.notes = text
                continue
            for doc in yaml.safe_load_all(text):
                if doc:
                    self.docs.append((path, doc))

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for _, d in self.docs if d.get("kind") == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [d for d in self.of_kind(kind) if name is None or d["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
        return found[0]

    @property
    def deployment(self) -> dict[str, Any]:
        return self.one("Deployment")

    @property
    def pod_spec(self) -> dict[str, Any]:
        return self.deployment["spec"]["template"]["spec"]

    @property
    def container(self) -> dict[str, Any]:
        containers = self.pod_spec["containers"]
        assert len(containers) == 1, f"expected one container, found {len(containers)}"
        return containers[0]

    @property
    def env(self) -> dict[str, dict[str, Any]]:
        entries = self.container.get("env", [])
        names = [e["name"] for e in entries]
        duplicates = {n for n in names if names.count(n) > 1}
        assert not duplicates, f"env names set twice: {sorted(duplicates)}"
        return {e["name"]: e for e in entries}

    def env_value(self, name: str) -> str:
        entry = self.env.get(name)
        assert entry is not None, f"{name} is not in the env"
        assert "value" in entry, f"{name} has no literal value: {entry}"
        return entry["value"]

    def main_service(self) -> dict[str, Any]:
        return self.one("Service", RELEASE)

    def chart_secret(self) -> dict[str, Any] | None:
        secrets = self.of_kind("Secret")
        assert len(secrets) <= 1, "the chart creates at most one Secret"
        return secrets[0] if secrets else None

    def pod_specs(self) -> list[tuple[str, dict[str, Any]]]:
        specs = [(f"Deployment/{d['metadata']['name']}", d["spec"]["template"]["spec"])
                 for d in self.of_kind("Deployment")]
        specs += [(f"Pod/{p['metadata']['name']}", p["spec"]) for p in self.of_kind("Pod")]
        return specs


CHART: helm.Chart | None = None


def chart() -> helm.Chart:
    global CHART
    if CHART is None:
        CHART = helm.Chart.load(CHART_DIR)
    return CHART


def render(values: dict[str, Any]) -> Rendered:
    manifests = chart().render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return Rendered(values, manifests)


def merged(values: dict[str, Any]) -> dict[str, Any]:
    return chart().merge_values(values)


def load_values(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text()) or {}
    assert isinstance(data, dict), f"{path.name} is not a mapping"
    return data


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def render_error(values: dict[str, Any]) -> str:
    """Renders values that must be refused; returns the error text."""
    try:
        render(values)
    except helm.HelmError as exc:
        return str(exc)
    raise AssertionError(f"render of {values} succeeded but must fail")


# --------------------------------------------------------------------------------------------
# Checks that hold for every value set


def check_lint(values: dict[str, Any]) -> None:
    report = helm.lint(CHART_DIR, values, strict=True, kube_version=f"v{KUBE_VERSION}.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert not problems, f"helm lint --strict: {problems}"


def check_schemas(r: Rendered) -> None:
    assert r.docs, "nothing rendered"
    for path, doc in r.docs:
        if doc["kind"] == "ServiceMonitor":
            check_servicemonitor_shape(r, doc)
            continue
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            raise AssertionError(f"{path}: {doc['kind']} {where}: {exc.message}") from None
        except kubernetes_validate.SchemaNotFoundError as exc:
            raise AssertionError(f"{path}: {exc.message}") from None


def check_servicemonitor_shape(r: Rendered, sm: dict[str, Any]) -> None:
    # No schema ships for the CRD; check the metadata against ObjectMeta and the spec by hand.
    assert sm["apiVersion"] == "monitoring.coreos.com/v1", sm["apiVersion"]
    assert set(sm) <= {"apiVersion", "kind", "metadata", "spec"}, sorted(sm)
    kubernetes_validate.validate(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": sm["metadata"]}, KUBE_VERSION, strict=True
    )
    spec = sm["spec"]
    assert set(spec) <= SERVICEMONITOR_SPEC_KEYS, f"unknown ServiceMonitor spec keys {set(spec) - SERVICEMONITOR_SPEC_KEYS}"
    service = r.main_service()
    labels = service["metadata"]["labels"]
    selector = spec["selector"]["matchLabels"]
    assert selector and all(labels.get(k) == v for k, v in selector.items()), \
        f"ServiceMonitor selector {selector} does not select Service labels {labels}"
    assert NAMESPACE in spec["namespaceSelector"]["matchNames"], spec["namespaceSelector"]
    port_names = {p["name"] for p in service["spec"]["ports"]}
    assert spec["endpoints"], "ServiceMonitor has no endpoints"
    for endpoint in spec["endpoints"]:
        assert set(endpoint) <= SERVICEMONITOR_ENDPOINT_KEYS, \
            f"unknown endpoint keys {set(endpoint) - SERVICEMONITOR_ENDPOINT_KEYS}"
        assert endpoint["port"] in port_names, f"endpoint port {endpoint['port']} not on the Service {port_names}"
        assert endpoint["path"].startswith("/"), endpoint["path"]
        for key in ("interval", "scrapeTimeout"):
            if key in endpoint:
                assert PROMETHEUS_DURATION.match(endpoint[key]), f"{key} {endpoint[key]!r} is no duration"
        assert isinstance(endpoint.get("honorLabels", False), bool)
    # Only the main Service exposes metrics, so each pod is scraped once.
    for other in r.of_kind("Service"):
        if other is not service:
            assert "metrics" not in {p["name"] for p in other["spec"]["ports"]}, other["metadata"]["name"]


def check_probes(r: Rendered) -> None:
    c = r.container
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports.get("grpc") == GRPC_PORT, f"container port grpc is {ports.get('grpc')}"
    enabled = merged(r.values)
    # The kubelet's gRPC probes speak no TLS: with tls.enabled they are TCP checks.
    kind = "tcpSocket" if enabled["tls"]["enabled"] else "grpc"
    for probe_name in ("livenessProbe", "readinessProbe", "startupProbe"):
        if not enabled[probe_name]["enabled"]:
            assert probe_name not in c, f"{probe_name} rendered although disabled"
            continue
        probe = c.get(probe_name)
        assert probe is not None, f"{probe_name} missing"
        assert set(probe) & {"grpc", "httpGet", "tcpSocket", "exec"} == {kind}, f"{probe_name} is not a {kind} probe"
        assert probe[kind]["port"] == ports["grpc"], f"{probe_name} hits port {probe[kind]['port']}, not grpc"
        for key in ("periodSeconds", "timeoutSeconds", "failureThreshold"):
            assert probe[key] == enabled[probe_name][key], f"{probe_name}.{key} is not the value's"
    if "livenessProbe" in c:
        live = c["livenessProbe"]
        assert live["periodSeconds"] * live["failureThreshold"] >= MIN_LIVENESS_BUDGET_S, \
            f"liveness restarts after {live['periodSeconds'] * live['failureThreshold']} s without an answer"
        assert live["timeoutSeconds"] <= live["periodSeconds"], live
        assert live.get("successThreshold", 1) == 1, live
    if kind == "tcpSocket":
        # TCP checks cannot ask for a service; a TCP accept never depends on Redis.
        return
    if "readinessProbe" in c:
        assert c["readinessProbe"]["grpc"].get("service") == READINESS_SERVICE, c["readinessProbe"]
    for probe_name in ("livenessProbe", "startupProbe"):
        if probe_name in c:
            grpc = c[probe_name]["grpc"]
            # Written out, not left to the default: a reader sees liveness asks for "".
            assert "service" in grpc and grpc["service"] == LIVENESS_SERVICE, \
                f"{probe_name} must ask for the overall service \"\" (never Redis-dependent): {grpc}"


def check_node_would_start(r: Rendered) -> None:
    """The rendered env passes the node's start-up checks that refuse unsafe settings (exit 64)."""
    env = r.env
    listen = r.env_value("PRESENCE_LISTEN_ADDR")
    loopback = listen.startswith("127.") or listen.startswith("[::1]")
    auth = r.env_value("PRESENCE_AUTH")
    if auth == "insecure" and not loopback:
        assert env.get("PRESENCE_ALLOW_INSECURE", {}).get("value") == "true", \
            "insecure identity on a non-loopback address without PRESENCE_ALLOW_INSECURE=true: the node exits 64"
    else:
        assert "PRESENCE_ALLOW_INSECURE" not in env, "PRESENCE_ALLOW_INSECURE set although not insecure"
    if auth == "jwt":
        assert ("PRESENCE_JWT_SECRET" in env) != ("PRESENCE_JWT_PUBLIC_KEY_FILE" in env), \
            "jwt mode needs exactly one of PRESENCE_JWT_SECRET / PRESENCE_JWT_PUBLIC_KEY_FILE"
    if "PRESENCE_ADMIN_ADDR" in env:
        token = env.get("PRESENCE_ADMIN_TOKEN")
        if token is not None:
            # Never a literal (possibly empty) value: the token comes from a Secret.
            assert "value" not in token and "secretKeyRef" in token.get("valueFrom", {}), token
        else:
            assert "PRESENCE_ADMIN_CLIENT_CA_FILE" in env, \
                "admin on 0.0.0.0 without a token or admin mTLS: the node exits 64"
    else:
        assert "PRESENCE_ADMIN_TOKEN" not in env and "PRESENCE_ADMIN_CLIENT_CA_FILE" not in env
    for ca in ("PRESENCE_TLS_CLIENT_CA_FILE", "PRESENCE_ADMIN_CLIENT_CA_FILE"):
        if ca in env:
            assert "PRESENCE_TLS_CERT_FILE" in env, f"{ca} without PRESENCE_TLS_CERT_FILE: the node exits 64"
    assert ("PRESENCE_TLS_CERT_FILE" in env) == ("PRESENCE_TLS_KEY_FILE" in env), "TLS cert without key or vice versa"
    tls = merged(r.values)["tls"]["enabled"]
    assert ("PRESENCE_TLS_CERT_FILE" in env) == tls, "PRESENCE_TLS_CERT_FILE does not follow tls.enabled"
    # Certificate files come from whole-directory Secret mounts: subPath mounts never see a rotation.
    mounts = {m["name"]: m for m in r.container.get("volumeMounts", [])}
    for name in ("PRESENCE_TLS_CERT_FILE", "PRESENCE_TLS_KEY_FILE", "PRESENCE_TLS_CLIENT_CA_FILE",
                 "PRESENCE_ADMIN_CLIENT_CA_FILE"):
        if name in env:
            path = r.env_value(name)
            holders = [m for m in mounts.values() if path.startswith(m["mountPath"].rstrip("/") + "/")]
            assert len(holders) == 1, f"{name}={path} is not under exactly one mount: {list(mounts.values())}"
            assert "subPath" not in holders[0] and holders[0].get("readOnly") is True, holders[0]


def shutdown_grace_ms(r: Rendered) -> int:
    entry = r.env.get("PRESENCE_SHUTDOWN_GRACE_MS")
    return int(entry["value"]) if entry else NODE_DEFAULT_SHUTDOWN_GRACE_MS


def check_termination_grace(r: Rendered) -> None:
    tgps = r.pod_spec["terminationGracePeriodSeconds"]
    grace_ms = shutdown_grace_ms(r)
    pre_stop = r.container.get("lifecycle", {}).get("preStop")
    pre_stop_ms = 0
    if pre_stop:
        if "sleep" in pre_stop:
            pre_stop_ms = pre_stop["sleep"]["seconds"] * 1000
        else:
            pre_stop_ms = int(pre_stop["exec"]["command"][-1]) * 1000
    assert tgps * 1000 > grace_ms, f"terminationGracePeriodSeconds {tgps} <= shutdown grace {grace_ms} ms"
    assert tgps * 1000 > grace_ms + pre_stop_ms, \
        f"terminationGracePeriodSeconds {tgps} does not cover preStop {pre_stop_ms} ms + drain {grace_ms} ms"
    # Helm drops null values when it merges, so a missing key means "derive it".
    if merged(r.values).get("terminationGracePeriodSeconds") is None:
        assert tgps == -(-grace_ms // 1000) + pre_stop_ms // 1000 + 5, f"derived {tgps} is not grace + preStop + 5"


def check_replicas_and_hpa(r: Rendered) -> None:
    values = merged(r.values)
    spec = r.deployment["spec"]
    hpas = r.of_kind("HorizontalPodAutoscaler")
    if values["autoscaling"]["enabled"]:
        assert "replicas" not in spec, "Deployment sets replicas although the HPA owns them"
        assert len(hpas) == 1, "autoscaling.enabled but no HPA"
        hpa = hpas[0]
        assert hpa["apiVersion"] == "autoscaling/v2"
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", r.deployment["metadata"]["name"]), target
        assert hpa["spec"]["metrics"], "HPA without metrics"
    else:
        assert spec.get("replicas") == values["replicaCount"], spec.get("replicas")
        assert not hpas, "HPA rendered although autoscaling is off"


def check_secret_env(r: Rendered) -> None:
    for where, pod in r.pod_specs():
        for c in pod.get("containers", []) + pod.get("initContainers", []):
            for e in c.get("env", []):
                if SECRET_LOOKING.search(e["name"]) and e["name"] not in DOCUMENTED_NON_SECRET_ENV:
                    assert "value" not in e, f"{where} {c['name']}: {e['name']} has a literal value"
                    assert "secretKeyRef" in e.get("valueFrom", {}), f"{where}: {e['name']} is not from a Secret"


def check_inline_secrets_stay_in_secret(r: Rendered) -> None:
    values = merged(r.values)
    inline = [values["auth"]["jwt"]["secret"], values["admin"]["token"], values["authorizer"]["token"],
              values["redis"]["url"]]
    inline = [s for s in inline if s]
    for path, doc in r.docs:
        if doc["kind"] == "Secret":
            continue
        dumped = yaml.safe_dump(doc)
        for secret in inline:
            assert secret not in dumped, f"{path}: a secret value appears in a {doc['kind']}"
    if inline:
        secret = r.chart_secret()
        assert secret is not None, "inline secrets but no chart Secret"
        stored = {base64.b64decode(v).decode() for v in secret.get("data", {}).values()}
        for s in inline:
            assert s in stored, "an inline secret is missing from the chart Secret"


def check_security_context(r: Rendered) -> None:
    for where, pod in r.pod_specs():
        psc = pod.get("securityContext", {})
        for c in pod["containers"]:
            csc = c.get("securityContext", {})

            def eff(key: str) -> Any:
                return csc.get(key, psc.get(key))

            assert eff("runAsNonRoot") is True, f"{where}: runAsNonRoot is not true"
            assert eff("runAsUser") not in (None, 0), f"{where}: runAsUser is {eff('runAsUser')}"
            assert csc.get("readOnlyRootFilesystem") is True, f"{where}: root filesystem is writable"
            assert csc.get("allowPrivilegeEscalation") is False, f"{where}: privilege escalation allowed"
            assert csc.get("privileged") in (None, False), f"{where}: privileged"
            assert "ALL" in csc.get("capabilities", {}).get("drop", []), f"{where}: capabilities not dropped"
            assert not csc.get("capabilities", {}).get("add"), f"{where}: capabilities added"
            assert (eff("seccompProfile") or {}).get("type") == "RuntimeDefault", f"{where}: no RuntimeDefault seccomp"
    assert r.pod_spec["securityContext"]["runAsUser"] == 10001


def check_env_basics(r: Rendered) -> None:
    assert r.env_value("PRESENCE_LISTEN_ADDR") == f"0.0.0.0:{GRPC_PORT}"
    node_id = r.env["PRESENCE_NODE_ID"]
    assert node_id.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name", node_id
    values = merged(r.values)
    assert r.env_value("PRESENCE_AUTH") == values["auth"]["mode"]
    # Every config.* value reaches the node with its exact (integer) text.
    names = config_env_names()
    # (Helm drops null values when it merges, so only set ones are here.)
    for key, value in values["config"].items():
        expected = str(int(value)) if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)
        assert r.env_value(names[key]) == expected, f"{names[key]}={r.env_value(names[key])!r}, want {expected!r}"


def config_env_names() -> dict[str, str]:
    """config.* key -> env name, read from the chart's own table in _helpers.tpl."""
    text = (CHART_DIR / "templates" / "_helpers.tpl").read_text()
    block = text.split('{{- define "presence-node.configEnvNames" -}}', 1)[1].split("{{- end }}", 1)[0]
    return yaml.safe_load(block)


def check_wiring(r: Rendered) -> None:
    """Service, PDB and spread select exactly this release's pods; the test pod is a hook."""
    pod_labels = r.deployment["spec"]["template"]["metadata"]["labels"]
    selector = r.deployment["spec"]["selector"]["matchLabels"]
    assert all(pod_labels.get(k) == v for k, v in selector.items())
    for svc in r.of_kind("Service"):
        assert svc["spec"]["selector"] == selector, svc["metadata"]["name"]
        grpc = [p for p in svc["spec"]["ports"] if p["name"] == "grpc"]
        assert grpc and grpc[0]["appProtocol"] == "grpc" and grpc[0]["targetPort"] == "grpc", svc["spec"]["ports"]
    assert r.main_service()["spec"]["type"] == merged(r.values)["service"]["type"]
    values = merged(r.values)
    pdbs = r.of_kind("PodDisruptionBudget")
    if values["pdb"]["create"]:
        assert len(pdbs) == 1 and pdbs[0]["spec"]["selector"]["matchLabels"] == selector
    tests = [p for p in r.of_kind("Pod") if p["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"]
    if values["tests"]["enabled"]:
        assert len(tests) == 1, "no helm test pod"
        script = " ".join(tests[0]["spec"]["containers"][0].get("args", []))
        assert "grpc.health.v1.Health/Check" in script and READINESS_SERVICE in script, script
    annotations = r.deployment["spec"]["template"]["metadata"]["annotations"]
    assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/config"]), annotations
    assert r.pod_spec["automountServiceAccountToken"] is False
    for mount in r.container.get("volumeMounts", []):
        volume = next(v for v in r.pod_spec["volumes"] if v["name"] == mount["name"])
        if "secret" in volume:
            assert mount.get("readOnly") is True, f"secret volume {mount['name']} is mounted writable"
            assert "subPath" not in mount, f"secret volume {mount['name']} uses subPath: rotations never reach it"


CHECKS_FOR_EVERY_VALUE_SET: list[tuple[str, Callable[[Rendered], None]]] = [
    ("manifests valid against Kubernetes schemas (strict)", check_schemas),
    ("probes: gRPC liveness \"\" / readiness service (TCP with TLS), sane timings", check_probes),
    ("env passes the node's safe-default checks (no exit 64)", check_node_would_start),
    ("terminationGracePeriodSeconds covers preStop + drain", check_termination_grace),
    ("replicas vs HPA", check_replicas_and_hpa),
    ("secret-looking env vars come from Secrets", check_secret_env),
    ("inline secrets only in the chart Secret", check_inline_secrets_stay_in_secret),
    ("non-root, read-only, no privileges", check_security_context),
    ("listen address, node id, config env", check_env_basics),
    ("selectors, ports, PDB, helm test pod", check_wiring),
]


# --------------------------------------------------------------------------------------------
# What each value set is for


def expect_default(r: Rendered) -> None:
    assert r.deployment["spec"]["replicas"] == 1
    assert "PRESENCE_REDIS_URL" not in r.env and "PRESENCE_REDIS_MODE" not in r.env
    # auth.mode defaults to jwt: the only value given is the HS256 secret, kept in the chart Secret.
    assert r.env_value("PRESENCE_AUTH") == "jwt" and r.env_value("PRESENCE_JWT_ALGORITHM") == "HS256"
    assert "PRESENCE_ALLOW_INSECURE" not in r.env
    assert r.env["PRESENCE_JWT_SECRET"]["valueFrom"]["secretKeyRef"] == {"name": RELEASE, "key": "jwt-secret"}
    assert set(r.chart_secret()["data"]) == {"jwt-secret"}, r.chart_secret()["data"].keys()
    assert "WARNING: auth.mode=insecure" not in r.notes and '--token "$JWT"' in r.notes
    assert "tls.enabled is false" in r.notes, "NOTES.txt does not say the default is plaintext"
    c = r.container
    assert c["livenessProbe"]["grpc"] == {"port": GRPC_PORT, "service": ""}, c["livenessProbe"]
    assert c["readinessProbe"]["grpc"] == {"port": GRPC_PORT, "service": READINESS_SERVICE}, c["readinessProbe"]
    assert "startupProbe" not in c
    live = c["livenessProbe"]
    # tests/health.rs keeps Redis down for longer than this 30 s budget and checks "" stays SERVING.
    assert (live["periodSeconds"], live["timeoutSeconds"], live["failureThreshold"]) == (10, 3, 3), live
    assert "port-forward" in r.notes and "presence --server" in r.notes and "grpcurl" in r.notes
    assert r.one("PodDisruptionBudget")["spec"] == {
        "maxUnavailable": 1, "selector": r.deployment["spec"]["selector"]}
    spread = r.pod_spec["topologySpreadConstraints"]
    assert [(t["topologyKey"], t["whenUnsatisfiable"]) for t in spread] == [
        ("topology.kubernetes.io/zone", "ScheduleAnyway"), ("kubernetes.io/hostname", "ScheduleAnyway")], spread
    assert r.container["lifecycle"]["preStop"] == {"sleep": {"seconds": 5}}
    assert r.pod_spec["terminationGracePeriodSeconds"] == 30
    assert r.container["image"] == f"ghcr.io/presence-node/presence-node:{chart().metadata['appVersion']}"
    assert "PRESENCE_METRICS_ADDR" not in r.env and "PRESENCE_ADMIN_ADDR" not in r.env
    assert "PRESENCE_WEB_ADDR" not in r.env
    # config.maxSessions and config.maxSessionAgeMs are null: the node's own defaults apply.
    assert "PRESENCE_MAX_SESSIONS" not in r.env and "PRESENCE_MAX_SESSION_AGE_MS" not in r.env
    assert [p["name"] for p in r.container["ports"]] == ["grpc"]
    assert len(r.of_kind("Service")) == 1 and not r.of_kind("ServiceMonitor")


def expect_jwt_hs256_existing_secret(r: Rendered) -> None:
    assert r.env_value("PRESENCE_AUTH") == "jwt"
    assert r.env_value("PRESENCE_JWT_ALGORITHM") == "HS256"
    ref = r.env["PRESENCE_JWT_SECRET"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "presence-jwt", "key": "hs256-secret"}, ref
    assert "PRESENCE_JWT_PUBLIC_KEY_FILE" not in r.env
    assert r.env_value("PRESENCE_JWT_ISSUER") == "https://auth.example.com/"
    assert r.env_value("PRESENCE_JWT_AUDIENCE") == "presence"
    assert r.chart_secret() is None, "existingSecret given, the chart must not create one"
    assert "WARNING: auth.mode=insecure" not in r.notes
    assert '--token "$JWT"' in r.notes


def expect_jwt_rs256_public_key(r: Rendered) -> None:
    assert r.env_value("PRESENCE_JWT_ALGORITHM") == "RS256"
    assert "PRESENCE_JWT_SECRET" not in r.env
    key_file = r.env_value("PRESENCE_JWT_PUBLIC_KEY_FILE")
    mount = next(m for m in r.container["volumeMounts"] if m["name"] == "jwt-public-key")
    assert mount["readOnly"] is True
    volume = next(v for v in r.pod_spec["volumes"] if v["name"] == "jwt-public-key")["secret"]
    assert volume["secretName"] == r.chart_secret()["metadata"]["name"]
    assert volume["items"] == [{"key": "jwt-public-key.pem", "path": "public-key.pem"}], volume["items"]
    assert key_file == f"{mount['mountPath']}/public-key.pem", (key_file, mount)
    stored = base64.b64decode(r.chart_secret()["data"]["jwt-public-key.pem"]).decode()
    assert stored == r.values["auth"]["jwt"]["publicKey"], "the Secret does not hold the PEM as given"
    assert "BEGIN PUBLIC KEY" not in yaml.safe_dump(r.deployment), "the key leaked into the Deployment"


def expect_insecure_allowed(r: Rendered) -> None:
    assert r.env_value("PRESENCE_AUTH") == "insecure"
    assert r.env_value("PRESENCE_ALLOW_INSECURE") == "true"
    assert not any(k.startswith("PRESENCE_JWT_") for k in r.env), sorted(r.env)
    assert r.chart_secret() is None, "insecure mode with the embedded store needs no Secret"
    assert "WARNING: auth.mode=insecure" in r.notes and "auth.allowInsecure=true" in r.notes, r.notes
    assert "--user alice" in r.notes and "x-user-id: alice" in r.notes


def expect_tls_admin_mtls_no_token(r: Rendered) -> None:
    env = r.env
    assert r.env_value("PRESENCE_ADMIN_ADDR") == "0.0.0.0:50052"
    assert "PRESENCE_ADMIN_TOKEN" not in env, "admin mTLS without a token must not set PRESENCE_ADMIN_TOKEN"
    assert "PRESENCE_TLS_CLIENT_CA_FILE" not in env, "no device mTLS asked for"
    mounts = {m["name"]: m for m in r.container["volumeMounts"]}
    volumes = {v["name"]: v.get("secret") for v in r.pod_spec["volumes"]}
    assert r.env_value("PRESENCE_ADMIN_CLIENT_CA_FILE") == f"{mounts['tls-admin-client-ca']['mountPath']}/ca.crt"
    assert volumes["tls-admin-client-ca"] == {
        "secretName": "presence-admin-ca", "defaultMode": 0o444, "items": [{"key": "ca.crt", "path": "ca.crt"}]}
    assert volumes["tls"]["secretName"] == "presence-tls"
    assert r.chart_secret() is None, "nothing inline: no chart Secret (and no empty admin-token in one)"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert r.container[probe]["tcpSocket"] == {"port": GRPC_PORT}, r.container[probe]
    assert "probes are TCP checks" in r.notes and "readiness no longer follows a Redis outage" in r.notes
    assert "No admin token" in r.notes and "-cert backend.crt" in r.notes, r.notes
    assert "-plaintext" not in r.notes


def expect_hpa_metrics_headless(r: Rendered) -> None:
    hpa = r.one("HorizontalPodAutoscaler")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 12)
    targets = {m["resource"]["name"]: m["resource"]["target"]["averageUtilization"] for m in hpa["metrics"]}
    assert targets == {"cpu": 65, "memory": 80}, targets
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 600
    ref = r.env["PRESENCE_REDIS_URL"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": r.chart_secret()["metadata"]["name"], "key": "redis-url"}, ref
    assert r.env_value("PRESENCE_REDIS_MODE") == "standalone"
    assert r.env_value("PRESENCE_METRICS_ADDR") == "0.0.0.0:9090"
    assert r.env_value("PRESENCE_ADMIN_ADDR") == "0.0.0.0:50052"
    assert r.env["PRESENCE_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "admin-token"
    assert "Bearer $ADMIN_TOKEN" in r.notes and "{.data.admin-token}" in r.notes, r.notes
    assert {p["name"]: p["containerPort"] for p in r.container["ports"]} == {"grpc": 50051, "metrics": 9090, "admin": 50052, "web": 8080}
    assert {p["name"] for p in r.main_service()["spec"]["ports"]} == {"grpc", "metrics", "web"}, "admin must stay off the Service"
    assert r.env_value("PRESENCE_WEB_ADDR") == "0.0.0.0:8080"
    assert r.env_value("PRESENCE_WEB_ALLOWED_ORIGINS") == "https://app.example,https://admin.example"
    headless = r.one("Service", f"{RELEASE}-headless")["spec"]
    assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"] is False
    sm = r.one("ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert sm["spec"]["endpoints"][0]["scrapeTimeout"] == "10s"
    assert r.pod_spec["terminationGracePeriodSeconds"] == 45 + 5 + 5
    assert "dns:///presence-node-headless" in r.notes


def expect_redis_cluster_existing_secret(r: Rendered) -> None:
    assert r.deployment["spec"]["replicas"] == 3
    ref = r.env["PRESENCE_REDIS_URL"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "presence-redis", "key": "url"}, ref
    assert r.env_value("PRESENCE_REDIS_MODE") == "cluster"
    assert r.env_value("PRESENCE_KEY_PREFIX") == "presence-prod"
    assert r.env_value("PRESENCE_NODE_LEASE_TTL_MS") == "15000"
    assert "PRESENCE_EXAMPLE_PASSWORD" in r.env, "extraEnv was dropped"
    assert r.chart_secret() is None
    assert "embedded in-memory store" not in r.notes


def expect_tls_mtls(r: Rendered) -> None:
    mounts = {m["name"]: m for m in r.container["volumeMounts"]}
    volumes = {v["name"]: v.get("secret") for v in r.pod_spec["volumes"]}
    files = {
        "PRESENCE_TLS_CERT_FILE": ("tls", "presence-tls", "tls.crt", "tls.crt"),
        "PRESENCE_TLS_KEY_FILE": ("tls", "presence-tls", "tls.key", "tls.key"),
        "PRESENCE_TLS_CLIENT_CA_FILE": ("tls-client-ca", "presence-tls", "ca.crt", "ca.crt"),
        "PRESENCE_ADMIN_CLIENT_CA_FILE": ("tls-admin-client-ca", "presence-admin-ca", "backends-ca.pem", "ca.crt"),
    }
    for env, (volume, secret, key, path) in files.items():
        mount = mounts[volume]
        assert mount["readOnly"] is True and "subPath" not in mount, f"{volume}: {mount} (subPath mounts never update)"
        assert r.env_value(env) == f"{mount['mountPath']}/{path}", (env, r.env_value(env), mount)
        assert volumes[volume]["secretName"] == secret, volumes[volume]
        assert {"key": key, "path": path} in volumes[volume]["items"], volumes[volume]["items"]
    assert r.chart_secret() is None, "the TLS Secrets are the user's; the chart creates none"
    assert "https://127.0.0.1:50051 --ca-file ca.crt" in r.notes and "--client-cert" in r.notes, r.notes
    assert "-plaintext" not in r.notes
    assert "probes are TCP checks" in r.notes
    test_pod = r.one("Pod")
    script = test_pod["spec"]["containers"][0]["args"][0]
    assert "-plaintext" not in script and "-cert /etc/presence-node/tls/tls.crt" in script, script
    assert test_pod["spec"]["volumes"][0]["secret"]["secretName"] == "presence-tls"


EXPECTATIONS: dict[str, Callable[[Rendered], None]] = {
    "values-default.yaml": expect_default,
    "values-insecure-allowed.yaml": expect_insecure_allowed,
    "values-tls-admin-mtls-no-token.yaml": expect_tls_admin_mtls_no_token,
    "values-jwt-hs256-existing-secret.yaml": expect_jwt_hs256_existing_secret,
    "values-jwt-rs256-public-key.yaml": expect_jwt_rs256_public_key,
    "values-hpa-metrics-headless.yaml": expect_hpa_metrics_headless,
    "values-redis-cluster-existing-secret.yaml": expect_redis_cluster_existing_secret,
    "values-tls-mtls.yaml": expect_tls_mtls,
}


# --------------------------------------------------------------------------------------------
# Checks of single features and of values that must be refused

REDIS = deep_merge(JWT, {"redis": {"url": "redis://redis:6379"}})


def refused_values() -> None:
    # No values at all: jwt is the default and has no key; that is the only complaint.
    error = render_error({})
    assert "auth.mode=jwt (the default)" in error and "auth.jwt.existingSecret or auth.jwt.secret" in error, error
    assert error.count("\n  - ") == 1, f"the bare defaults should fail only for the JWT key: {error}"
    TLS = {"tls": {"enabled": True, "existingSecret": "presence-tls"}}
    cases = [
        ({"auth": {"mode": "jwt"}}, "auth.jwt.existingSecret or auth.jwt.secret"),
        ({"auth": {"mode": "insecure"}}, "set auth.allowInsecure=true"),
        ({"auth": {"mode": "insecure", "allowInsecure": False}}, "set auth.allowInsecure=true"),
        ({"auth": {"mode": "insecure", "allowInsecure": "yes"}}, "auth.allowInsecure must be true or false"),
        ({"auth": {"jwt": {"secret": "   "}}}, "auth.jwt.secret is blank"),
        ({"auth": {"mode": "jwt", "jwt": {"algorithm": "ES256"}}}, "auth.jwt.publicKey"),
        ({"auth": {"mode": "jwt", "jwt": {"algorithm": "none", "secret": "x"}}}, "auth.jwt.algorithm"),
        ({"auth": {"mode": "open"}}, "auth.mode"),
        ({"replicaCount": 3}, "replicaCount > 1 needs Redis"),
        ({"autoscaling": {"enabled": True}}, "autoscaling.enabled needs Redis"),
        (deep_merge(REDIS, {"redis": {"mode": "sentinel"}}), "redis.mode"),
        ({"redis": {"url": "rediss://redis:6379"}}, "redis.url must be redis://"),
        ({"redis": {"url": "redis://a:6379,redis://b:6379"}}, "needs redis.mode=cluster"),
        ({"metrics": {"serviceMonitor": {"enabled": True}}}, "needs metrics.enabled"),
        (deep_merge(JWT, {"admin": {"enabled": True}}), "admin.existingSecret or admin.token"),
        (deep_merge(JWT, {"admin": {"enabled": True, "token": " "}}), "admin.token is blank"),
        # Admin mTLS needs TLS; a client CA for devices alone does not guard the admin port.
        (deep_merge(JWT, {"admin": {"enabled": True}, "tls": {"adminClientCa": {"enabled": True}}}), "need tls.enabled"),
        (deep_merge(JWT, deep_merge(TLS, {"admin": {"enabled": True}, "tls": {"clientCa": {"enabled": True}}})),
         "or admin mTLS (tls.enabled and tls.adminClientCa.enabled)"),
        ({"config": {"sesionTtlMs": 1}}, "config.sesionTtlMs is not a known setting"),
        ({"tls": {"enabled": True}}, "tls.enabled needs tls.existingSecret"),
        ({"tls": {"clientCa": {"enabled": True}}}, "need tls.enabled"),
        ({"config": {"sessionTtlMs": 10000}}, "config.sessionTtlMs must be larger"),
    ]
    for values, message in cases:
        error = render_error(values)
        assert message in error, f"{values}: error does not say {message!r}: {error}"
    # The opt-ins render: insecure with allowInsecure, admin with mTLS and no token.
    r = render({"auth": {"mode": "insecure", "allowInsecure": True}})
    assert r.env_value("PRESENCE_ALLOW_INSECURE") == "true"
    r = render(deep_merge(JWT, deep_merge(TLS, {"admin": {"enabled": True}, "tls": {"adminClientCa": {"enabled": True}}})))
    assert "PRESENCE_ADMIN_TOKEN" not in r.env and "PRESENCE_ADMIN_CLIENT_CA_FILE" in r.env
    # With a token and admin mTLS both, the token is still passed (checked after the handshake).
    r = render(deep_merge(JWT, deep_merge(TLS, {"admin": {"enabled": True, "existingSecret": "adm"},
                                                "tls": {"adminClientCa": {"enabled": True}}})))
    assert r.env["PRESENCE_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "adm", "key": "admin-token"}


def switches() -> None:
    r = render(deep_merge(JWT, {"livenessProbe": {"enabled": False}, "readinessProbe": {"enabled": False},
                                "startupProbe": {"enabled": True}, "pdb": {"create": False},
                                "tests": {"enabled": False}, "topologySpread": {"enabled": False},
                                "serviceAccount": {"create": False}}))
    c = r.container
    assert "livenessProbe" not in c and "readinessProbe" not in c
    # Startup asks for "" too: a Redis outage at boot must not restart-loop the pods.
    assert c["startupProbe"]["grpc"] == {"port": GRPC_PORT, "service": ""}
    assert not r.of_kind("PodDisruptionBudget") and not r.of_kind("Pod") and not r.of_kind("ServiceAccount")
    assert "topologySpreadConstraints" not in r.pod_spec
    assert r.pod_spec["serviceAccountName"] == "default"
    check_schemas(r)

    r = render(deep_merge(JWT, {"lifecycle": {"preStop": {"useSleepAction": False, "seconds": 8}},
                                "config": {"shutdownGraceMs": 30500, "maxSessions": 50000}}))
    assert r.container["lifecycle"]["preStop"] == {"exec": {"command": ["sleep", "8"]}}
    assert r.pod_spec["terminationGracePeriodSeconds"] == 31 + 8 + 5
    assert r.env_value("PRESENCE_MAX_SESSIONS") == "50000"
    check_termination_grace(r)
    check_schemas(r)

    r = render(deep_merge(JWT, {"lifecycle": {"preStop": {"enabled": False}}, "terminationGracePeriodSeconds": 90}))
    assert "lifecycle" not in r.container and r.pod_spec["terminationGracePeriodSeconds"] == 90

    r = render(deep_merge(JWT, {"pdb": {"minAvailable": "50%"}, "image": {"digest": "sha256:" + "a" * 64}}))
    assert r.one("PodDisruptionBudget")["spec"]["minAvailable"] == "50%"
    assert "maxUnavailable" not in r.one("PodDisruptionBudget")["spec"]
    assert r.container["image"].endswith("@sha256:" + "a" * 64)
    check_schemas(r)

    r = render(deep_merge(JWT, {"redis": {"url": "redis://a:6379, redis://b:6379", "mode": "cluster"}, "replicaCount": 2}))
    assert r.env_value("PRESENCE_REDIS_MODE") == "cluster"
    check_inline_secrets_stay_in_secret(r)

    r = render({"auth": {"mode": "jwt", "jwt": {"secret": "hs256-inline-secret-value"}}})
    assert r.env["PRESENCE_JWT_SECRET"]["valueFrom"]["secretKeyRef"] == {"name": RELEASE, "key": "jwt-secret"}
    check_inline_secrets_stay_in_secret(r)
    check_secret_env(r)

    r = render({"auth": {"mode": "jwt", "jwt": {"algorithm": "ES256", "existingSecret": "keys",
                                                 "existingSecretPublicKeyKey": "ec.pem"}}})
    volume = next(v for v in r.pod_spec["volumes"] if v["name"] == "jwt-public-key")["secret"]
    assert volume["secretName"] == "keys" and volume["items"][0]["key"] == "ec.pem"
    assert r.chart_secret() is None


def checksums_follow_changes() -> None:
    def annotations(values: dict[str, Any]) -> dict[str, str]:
        return render(values).deployment["spec"]["template"]["metadata"]["annotations"]

    base = annotations(REDIS)
    assert annotations(deep_merge(REDIS, {"config": {"offlineGraceMs": 5000}}))["checksum/config"] != base["checksum/config"]
    assert annotations(deep_merge(JWT, {"redis": {"url": "redis://other:6379"}}))["checksum/secret"] != base["checksum/secret"]
    assert annotations(deep_merge(REDIS, {"podAnnotations": {"a": "b"}}))["a"] == "b"


def every_value_documented() -> None:
    """bitnami convention: a `## @param <path>` line for every leaf of values.yaml."""
    text = (CHART_DIR / "values.yaml").read_text()
    documented = set(re.findall(r"^\s*## @param (\S+)", text, re.MULTILINE))

    def leaves(node: Any, prefix: str) -> list[str]:
        if isinstance(node, dict) and node:
            return [leaf for k, v in node.items() for leaf in leaves(v, f"{prefix}.{k}" if prefix else k)]
        return [prefix]

    values = yaml.safe_load(text)
    missing = [p for p in leaves(values, "") if p not in documented]
    stale = [p for p in documented if p not in set(leaves(values, ""))]
    assert not missing, f"values without ## @param: {missing}"
    assert not stale, f"## @param for values that do not exist: {stale}"


# Settings the chart sets itself rather than through config.*.
CHART_MANAGED_ENV = {
    "PRESENCE_LISTEN_ADDR", "PRESENCE_NODE_ID", "PRESENCE_AUTH", "PRESENCE_JWT_ALGORITHM",
    "PRESENCE_JWT_SECRET", "PRESENCE_JWT_PUBLIC_KEY_FILE", "PRESENCE_JWT_LEEWAY_MS",
    "PRESENCE_JWT_ISSUER", "PRESENCE_JWT_AUDIENCE", "PRESENCE_REDIS_URL", "PRESENCE_REDIS_MODE",
    "PRESENCE_METRICS_ADDR", "PRESENCE_ADMIN_ADDR", "PRESENCE_ADMIN_TOKEN",
    "PRESENCE_TLS_CERT_FILE", "PRESENCE_TLS_KEY_FILE", "PRESENCE_TLS_CLIENT_CA_FILE",
    "PRESENCE_ADMIN_CLIENT_CA_FILE", "PRESENCE_ALLOW_INSECURE",
    "PRESENCE_AUTHORIZER_TOKEN", "PRESENCE_WEB_ADDR", "PRESENCE_WEB_ALLOWED_ORIGINS",
}


def chart_knows_every_node_setting() -> None:
    """Every PRESENCE_* setting in src/config.rs is reachable from the chart's values."""
    source = (ROOT / "src" / "config.rs").read_text()
    node = set(re.findall(r'env\s*=\s*"(PRESENCE_[A-Z0-9_]+)"', source))
    assert node, "no settings found in src/config.rs"
    chart_env = set(config_env_names().values()) | CHART_MANAGED_ENV
    missing = sorted(node - chart_env)
    assert not missing, (f"src/config.rs has settings the chart cannot set: {missing}; add them to config "
                         "in helm/presence-node/values.yaml and presence-node.configEnvNames in _helpers.tpl")
    ahead = sorted(chart_env - node - {"RUST_LOG"})
    if ahead:
        print(f"      (the chart also sets {', '.join(ahead)}, which this node version does not read yet)")


def values_files_are_covered() -> None:
    files = sorted(p.name for p in VALUES_DIR.glob("values-*.yaml"))
    assert set(files) == set(EXPECTATIONS), f"values files {files} vs expectations {sorted(EXPECTATIONS)}"


# --------------------------------------------------------------------------------------------
# Runner


def main() -> int:
    print(f"helm-python-sdk {helm.__version__} (Helm SDK {helm.helm_sdk_version()}), "
          f"kubernetes-validate {kubernetes_validate.__version__}, schemas of Kubernetes {KUBE_VERSION}")
    print(f"chart {CHART_DIR.relative_to(ROOT)}: {chart().name} {chart().version} (app {chart().metadata['appVersion']})")
    passed, failed = 0, []

    def run(name: str, fn: Callable[[], None]) -> None:
        nonlocal passed
        try:
            fn()
        except AssertionError as exc:
            failed.append(name)
            print(f"FAIL  {name}\n      {exc}")
        except Exception:
            failed.append(name)
            print(f"FAIL  {name} (crashed)")
            print("      " + traceback.format_exc().replace("\n", "\n      "))
        else:
            passed += 1
            print(f"ok    {name}")

    run("values.yaml: every value has ## @param", every_value_documented)
    run("every tests/chart/values-*.yaml has expectations", values_files_are_covered)
    run("every setting in src/config.rs can be set from values", chart_knows_every_node_setting)
    for path in sorted(VALUES_DIR.glob("values-*.yaml")):
        values = load_values(path)
        run(f"{path.name}: helm lint --strict (kube v{KUBE_VERSION})", lambda: check_lint(values))
        try:
            rendered = render(values)
        except helm.HelmError as exc:
            failed.append(f"{path.name}: render")
            print(f"FAIL  {path.name}: render\n      {exc}")
            continue
        for name, fn in CHECKS_FOR_EVERY_VALUE_SET:
            run(f"{path.name}: {name}", lambda fn=fn: fn(rendered))
        if path.name in EXPECTATIONS:
            run(f"{path.name}: scenario expectations", lambda: EXPECTATIONS[path.name](rendered))
    run("bad values are refused with a message naming them", refused_values)
    run("feature switches (probes, PDB, preStop, digest, inline secrets)", switches)
    run("checksum annotations follow config and Secret changes", checksums_follow_changes)

    print()
    if failed:
        print("failed checks:")
        for name in failed:
            print(f"  - {name}")
    print(f"chart: {passed} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
