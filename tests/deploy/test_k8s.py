"""The Kubernetes manifests of deploy/k8s, offline (no cluster runs here; nothing schedules a pod):
every built-in kind validated strictly against a current Kubernetes's schemas (kubernetes-validate ships
them), the CRD kinds checked for what their operators require, and every manifest against the code it
deploys: port, probe paths, settings, user, image tags, the router's template and body limit, the alert
rules.

`python -m tests.deploy.test_k8s` prints deploy/k8s/prometheusrule.yaml as it must be (after a change to
deploy/prometheus/alerts.yml)."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from factory_anomaly.app.config import Settings
from factory_anomaly.app.main import create_app
from tests.deploy.test_asset_routing import nginx_config

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
CRD_KINDS = {"ServiceMonitor", "PrometheusRule", "InferenceService"}
KUBERNETES_VERSION = kubernetes_validate.latest_version()
PORT = 8000  # the port the images' uvicorn listens on (Dockerfile CMD)


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def manifests() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in documents(path):
            yield path, doc


def find(kind: str, name: str, path: Path | None = None) -> dict[str, Any]:
    found = [doc for where, doc in manifests() if doc["kind"] == kind and doc["metadata"]["name"] == name
             and (path is None or where == path)]  # fmt: skip
    assert len(found) == 1, (kind, name, path, len(found))
    return found[0]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(spec: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in spec.get("env", [])}


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def app_paths() -> set[str]:
    """The app's documented paths (every route but the docs pages)."""
    return set(create_app(Settings(model_store=Path("unused"))).openapi()["paths"])


# --- validity -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "doc"),
    [(path, doc) for path, doc in manifests() if doc["kind"] not in CRD_KINDS],
    ids=lambda value: value.name if isinstance(value, Path) else value["kind"],
)
def test_built_in_kinds_validate_strictly(path: Path, doc: dict[str, Any]) -> None:
    """kubernetes-validate --strict: unknown fields are errors, not ignored."""
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest_but_the_variants() -> None:
    kustomization = documents(K8S / "kustomization.yaml")[0]
    listed = set(kustomization["resources"])
    assert listed == {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    namespace = find("Namespace", kustomization["namespace"])
    assert namespace["kind"] == "Namespace"


def test_crd_kinds_have_what_their_operators_require() -> None:
    service = find("Service", "anomaly-api")
    port_names = {port["name"] for port in service["spec"]["ports"]}
    monitor = find("ServiceMonitor", "anomaly-api")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert matches(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    others = [
        doc for _, doc in manifests() if doc["kind"] == "Service" and doc["metadata"]["name"] != "anomaly-api"
    ]
    assert not any(
        matches(monitor["spec"]["selector"]["matchLabels"], doc["metadata"]["labels"]) for doc in others
    )
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in port_names and endpoint["path"] in app_paths()
    rule = find("PrometheusRule", "anomaly-api")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    for group in rule["spec"]["groups"]:
        assert group["name"] and group["rules"]
        assert all(("alert" in r or "record" in r) and "expr" in r for r in group["rules"])
    isvc = find("InferenceService", "factory-anomaly")
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    predictor = isvc["spec"]["predictor"]
    (served,) = predictor["containers"]
    assert served["name"] == "kserve-container"  # the name KServe gives a custom predictor's container
    assert [port["containerPort"] for port in served["ports"]] == [PORT]
    probes = [served[name]["httpGet"]["path"] for name in ("startupProbe", "livenessProbe", "readinessProbe")]
    assert set(probes) <= app_paths()  # a startup probe too: the model loads before uvicorn answers
    assert served["readinessProbe"]["httpGet"]["path"].startswith("/v2/")
    assert predictor["maxReplicas"] == 1  # alarms need an asset's readings in one process (no router here)
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    # the pod spec KServe builds from the predictor: the same schema as any pod's
    pod = {key: value for key, value in predictor.items() if key not in ("minReplicas", "maxReplicas")}
    kubernetes_validate.validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": pod},
                                 KUBERNETES_VERSION, strict=True)  # fmt: skip


def test_the_prometheus_rule_is_the_tested_alert_rules() -> None:
    alerts = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    assert find("PrometheusRule", "anomaly-api")["spec"] == {"groups": alerts["groups"]}
    assert (K8S / "prometheusrule.yaml").read_text() == prometheus_rule_text()
    # Prometheus Operator names a ServiceMonitor's targets' job after the Service: the rules select on it
    assert 'job="anomaly-api"' in (ROOT / "deploy" / "prometheus" / "alerts.yml").read_text()
    monitor = find("ServiceMonitor", "anomaly-api")["spec"]
    assert "jobLabel" not in monitor  # a jobLabel would name the job after a label instead
    assert matches(monitor["selector"]["matchLabels"], find("Service", "anomaly-api")["metadata"]["labels"])


# --- agreement with the code --------------------------------------------------------------------------------


def test_the_deployment_runs_the_service_as_the_image_does() -> None:
    deployment = find("Deployment", "anomaly-api", K8S / "deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    api = container(deployment)
    assert [(port["name"], port["containerPort"]) for port in api["ports"]] == [("http", PORT)]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"EXPOSE {PORT}" in dockerfile and f'"--port", "{PORT}"' in dockerfile
    paths = app_paths()
    probes = {
        name: api[name]["httpGet"]["path"] for name in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert probes == {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    assert set(probes.values()) <= paths
    # every variable is a setting (pydantic-settings would ignore a misspelt one silently)
    fields = {f"ANOMALY_{name.upper()}" for name in Settings.model_fields}
    assert set(env_of(api)) <= fields, set(env_of(api)) - fields
    assert env_of(api)["ANOMALY_PROVIDER"] == "cpu"
    # the image's user, read-only root, no privilege
    uid = re.search(r"useradd --system --uid (\d+)", dockerfile)
    assert (
        uid and pod["securityContext"]["runAsUser"] == int(uid[1]) and pod["securityContext"]["runAsNonRoot"]
    )
    hardening = api["securityContext"]
    assert hardening["readOnlyRootFilesystem"] and not hardening["allowPrivilegeEscalation"]
    assert hardening["capabilities"]["drop"] == ["ALL"]
    mounts = {mount["mountPath"]: mount for mount in api["volumeMounts"]}
    alarm_db = Path(env_of(api)["ANOMALY_ALARM_DB"])
    assert str(alarm_db.parent) in mounts and not mounts[str(alarm_db.parent)].get("readOnly", False)
    assert mounts[env_of(api)["ANOMALY_MODEL_STORE"]]["readOnly"] and "/tmp" in mounts
    # the image tags carry the project's version
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert api["image"] == f"factory-anomaly/api:{version}"


def test_the_journal_binds_the_replicas_to_one_node() -> None:
    """SQLite in WAL mode: every process on one host (docs/serving.md); so one RWO volume, and a required
    affinity of the replicas to each other by node."""
    deployment = find("Deployment", "anomaly-api", K8S / "deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    claims = {volume["name"]: volume["persistentVolumeClaim"]["claimName"] for volume in pod["volumes"]
              if "persistentVolumeClaim" in volume}  # fmt: skip
    journal = find("PersistentVolumeClaim", claims["alarm-journal"])
    assert journal["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert find("PersistentVolumeClaim", claims["models"])["spec"]["accessModes"] == ["ReadWriteMany"]
    (term,) = pod["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert matches(term["labelSelector"]["matchLabels"], pod_labels(deployment))


def pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    assert matches(deployment["spec"]["selector"]["matchLabels"], labels)
    return labels


def test_selectors_reach_the_pods_they_mean() -> None:
    api_pods = pod_labels(find("Deployment", "anomaly-api", K8S / "deployment.yaml"))
    router_pods = pod_labels(find("Deployment", "anomaly-router"))
    for name in ("anomaly-api", "anomaly-api-pods"):
        service = find("Service", name)
        assert matches(service["spec"]["selector"], api_pods)
        assert [(port["port"], port["targetPort"]) for port in service["spec"]["ports"]] == [(PORT, "http")]
    assert find("Service", "anomaly-api-pods")["spec"]["clusterIP"] == "None"
    assert matches(find("Service", "anomaly-router")["spec"]["selector"], router_pods)
    assert matches(find("PodDisruptionBudget", "anomaly-api")["spec"]["selector"]["matchLabels"], api_pods)
    hpa = find("HorizontalPodAutoscaler", "anomaly-api")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "anomaly-api"}
    assert hpa["minReplicas"] >= 2  # the PDB's one voluntary disruption at a time leaves one pod serving
    api_policy = find("NetworkPolicy", "anomaly-api")["spec"]
    assert matches(api_policy["podSelector"]["matchLabels"], api_pods)
    sources = api_policy["ingress"][0]["from"]
    assert any(matches(source.get("podSelector", {}).get("matchLabels", {}), router_pods)
               and "namespaceSelector" not in source for source in sources)  # fmt: skip
    assert matches(find("NetworkPolicy", "anomaly-router")["spec"]["podSelector"]["matchLabels"], router_pods)
    backend = find("Ingress", "anomaly")["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "anomaly-router", "port": {"name": "http"}}


def test_the_router_is_the_tested_nginx_template_on_the_headless_service() -> None:
    template = (ROOT / "deploy" / "nginx" / "anomaly.conf.template").read_text()
    assert find("ConfigMap", "anomaly-router-template")["data"]["anomaly.conf.template"] == template
    router = find("Deployment", "anomaly-router")
    nginx = container(router)
    env = env_of(nginx)
    # the compose stack's image (tests/deploy/test_containers.py renders the template for it)
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert nginx["image"] == compose["services"]["nginx"]["image"]
    assert int(env["NGINX_MAX_BODY"]) == Settings.model_fields["max_body_bytes"].default
    assert set(re.findall(r"\$\{(NGINX_\w+)\}", template)) <= set(env)
    namespace = documents(K8S / "kustomization.yaml")[0]["namespace"]
    assert f"server anomaly-api-pods.{namespace}.svc.cluster.local:{PORT} resolve" in env["NGINX_API_SERVERS"]
    assert env["NGINX_LISTEN"] == str(nginx["ports"][0]["containerPort"])
    assert "max_fails=3 fail_timeout=10s" in env["NGINX_API_SERVERS"]  # the template's passive health check


def test_the_router_s_nginx_configuration_is_valid(tmp_path: Path) -> None:
    """The template with the router's values through `nginx -t`, as compose's are checked (Debian's nginx
    predates `resolve`, 1.27.3, and no cluster DNS answers here: the name is given as localhost)."""
    env = env_of(container(find("Deployment", "anomaly-router")))
    servers = re.sub(r"server \S+:(\d+) resolve ", r"server localhost:\1 ", env["NGINX_API_SERVERS"])
    values = {key: value for key, value in env.items() if key != "NGINX_ENVSUBST_FILTER"}
    nginx_config(tmp_path, values | {"NGINX_API_SERVERS": re.sub(r"resolver [^;]*;", "", servers)})


def test_the_gpu_deployment_differs_only_where_it_should() -> None:
    cpu = find("Deployment", "anomaly-api", K8S / "deployment.yaml")
    gpu = find("Deployment", "anomaly-api", K8S / "gpu" / "deployment.yaml")
    gpu_pod, gpu_api = gpu["spec"]["template"]["spec"], container(gpu)
    assert gpu_api["image"] == container(cpu)["image"].replace("/api:", "/api-gpu:")
    assert env_of(gpu_api)["ANOMALY_PROVIDER"] == "cuda"
    assert gpu_api["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert gpu_pod["nodeSelector"] and gpu_pod["tolerations"]
    # undo exactly those, and the rest is the CPU Deployment
    gpu_api["image"] = container(cpu)["image"]
    next(item for item in gpu_api["env"] if item["name"] == "ANOMALY_PROVIDER")["value"] = "cpu"
    del gpu_api["resources"]["limits"]["nvidia.com/gpu"], gpu_pod["nodeSelector"], gpu_pod["tolerations"]
    gpu_api["startupProbe"]["failureThreshold"] = container(cpu)["startupProbe"]["failureThreshold"]
    assert gpu == cpu


# --- the generated PrometheusRule ---------------------------------------------------------------------------

RULE_HEAD = """\
# Prometheus Operator: the alert rules of deploy/prometheus/alerts.yml (promtool tests them there) as
# they are; tests/deploy/test_k8s.py checks that the groups are equal. Regenerate after changing the rules:
#   python -m tests.deploy.test_k8s  (prints this file)
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: anomaly-api
  labels:
    app.kubernetes.io/part-of: factory-anomaly
spec:
"""


def prometheus_rule_text() -> str:
    """deploy/k8s/prometheusrule.yaml: alerts.yml's groups indented under `spec`, comments and all."""
    lines = (ROOT / "deploy" / "prometheus" / "alerts.yml").read_text().splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith("groups:"))
    return RULE_HEAD + "".join("  " + line if line.strip() else line for line in lines[start:])


if __name__ == "__main__":
    print(prometheus_rule_text(), end="")
