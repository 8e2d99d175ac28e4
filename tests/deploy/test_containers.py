"""The Dockerfile and docker-compose.yml, checked without a Docker engine: the Dockerfile's stages, users,
health checks and install steps, and the compose file as Debian's `docker-compose config` resolves it
(the install steps themselves run in test_serving_install.py)."""

from __future__ import annotations

import fnmatch
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from factory_anomaly.app.config import Settings
from tests.deploy.conftest import (
    DASHBOARD,
    GRAFANA_DIR,
    PROMETHEUS_DIR,
    ROOT,
    Stage,
    dockerfile,
    exec_form,
    healthcheck_command,
    stage_map,
)
from tests.deploy.test_asset_routing import HEALTH, nginx_config
from tests.deploy.test_asset_routing import TEMPLATE as NGINX_TEMPLATE

SERVICES = {"api", "api-gpu", "nginx", "prometheus", "grafana", "simulator"}


# --- the Dockerfile ---------------------------------------------------------------------------------------


def test_the_dockerfile_has_the_runtime_gpu_and_simulator_targets_runtime_last() -> None:
    args, stages = dockerfile()
    names = [stage.name for stage in stages]
    assert {"build", "gpu", "simulator", "runtime"} <= set(names)
    assert names[-1] == "runtime"  # `docker build .` builds the CPU service
    for image in args.values():
        repository, _, tag = image.partition(":")
        assert repository and tag and tag != "latest" and re.search(r"\d+\.\d+", tag), image


def test_the_images_run_one_non_root_process_with_a_readiness_health_check() -> None:
    stages = stage_map()
    for name in ("runtime", "gpu"):
        stage = stages[name]
        command = exec_form(stage.last("CMD"))
        assert command[1:4] == ["-m", "uvicorn", "factory_anomaly.app.main:app"], command
        assert "--workers" not in command  # one process per container (docs/metrics.md)
        health = healthcheck_command(stage)
        assert "http://127.0.0.1:8000/readyz" in health[-1]

    def user(stage: Stage) -> str | None:
        """The stage's last USER, or the one it inherits from a stage it is built on."""
        own = stage.all("USER")
        if own:
            return own[-1]
        return user(stages[stage.base]) if stage.base in stages else None

    for name in ("runtime", "gpu", "simulator"):
        assert user(stages[name]) not in (None, "root", "0"), name
    assert "ANOMALY_PROVIDER=cuda" in " ".join(stages["gpu"].all("ENV"))
    assert "ANOMALY_PROVIDER=cpu" in " ".join(stages["runtime"].all("ENV"))


def test_the_install_steps_are_the_script_s_and_the_runtime_has_no_training_code() -> None:
    stages = stage_map()
    steps = {
        name: [shlex.split(run) for run in stage.all("RUN") if "install-serving.sh" in run]
        for name, stage in stages.items()
    }
    assert [step[2:4] + step[5:] for step in steps["build"]] == [
        ["deps", "/src", "cpu"],
        ["app", "/src"],
        ["model", "/src", "factory-ae"],
    ]
    assert [step[2] + " " + step[-1] for step in steps["gpu-build"]] == ["deps gpu", "app /opt/anomaly"]
    copied = " ".join(stages["runtime"].all("COPY") + stages["serving-base"].all("COPY"))
    assert "training" not in copied and "plant" not in copied
    simulator = {tuple(copy.split()) for copy in stages["simulator"].all("COPY")}
    assert simulator == {  # the plant, and the client it calls the service with, beside the serving packages
        ("factory_anomaly/plant/", "/opt/anomaly/factory_anomaly/plant/"),
        ("client/factory_anomaly_client/", "/opt/anomaly/factory_anomaly_client/"),
    }


def test_every_file_the_dockerfile_copies_is_in_the_build_context() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def included(path: str) -> bool:
        keep = True
        for pattern in patterns:
            negate = pattern.startswith("!")
            glob = pattern.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, glob) or path.startswith(glob + "/") or glob == "*":
                keep = negate
        return keep

    for stage in dockerfile()[1]:
        for args in stage.all("COPY"):
            if args.startswith("--from="):
                continue
            *sources, _ = args.split()
            for source in sources:
                assert (ROOT / source).exists(), source
                assert included(source.rstrip("/")), f"{source} is excluded by .dockerignore"


# --- docker-compose.yml ----------------------------------------------------------------------------------


def compose_config(*options: str) -> dict[str, Any]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed and `make deploy-tools` could not install it")
    out = subprocess.run(
        [binary, *options, "-f", "docker-compose.yml", "config"], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    config: dict[str, Any] = yaml.safe_load(out.stdout)
    return config


def test_compose_resolves_and_pins_every_image() -> None:
    services = compose_config()["services"]
    assert set(services) == SERVICES
    stages = stage_map()
    for name, service in services.items():
        repository, _, tag = service["image"].partition(":")
        assert tag and tag != "latest" and re.fullmatch(r"v?\d+\.\d+\.\d+", tag), (name, service["image"])
        if "build" in service:
            assert service["build"]["target"] in stages, name
    targets = {name: s["build"]["target"] for name, s in services.items() if "build" in s}
    assert targets == {"api": "runtime", "api-gpu": "gpu", "simulator": "simulator"}


def test_compose_wires_the_stack() -> None:
    services = compose_config()["services"]
    api, gpu = services["api"], services["api-gpu"]
    assert any(volume.endswith(":/models:ro") for volume in api["volumes"])
    assert api["environment"]["ANOMALY_MODEL_STORE"] == "/models"
    # the alarm journal on a named volume, at the path the image's ANOMALY_ALARM_DB names
    for service in (api, gpu):
        assert any(
            str(volume).startswith("alarm-journal") and ":/data" in str(volume)
            for volume in service["volumes"]
        )
    assert gpu["profiles"] == ["gpu"] and gpu["environment"]["ANOMALY_PROVIDER"] == "cuda"
    [device] = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert "api" in gpu["networks"]["default"]["aliases"]  # Prometheus's DNS discovery finds it

    prometheus = services["prometheus"]
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in prometheus["volumes"]}
    assert Path(mounts["/etc/prometheus"]) == PROMETHEUS_DIR
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]

    grafana = services["grafana"]
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in grafana["volumes"]}
    assert Path(mounts["/etc/grafana/provisioning"]) == GRAFANA_DIR / "provisioning"
    dashboards = Path(mounts["/var/lib/grafana/dashboards"])
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert dashboards / Path(home).relative_to("/var/lib/grafana/dashboards") == DASHBOARD

    simulator = services["simulator"]
    assert simulator["depends_on"] == {"nginx": {"condition": "service_started"}}
    assert "--url=http://nginx:8080" in simulator["command"]  # through nginx: X-Asset picks the process
    assert any(arg.startswith("--rate=") for arg in simulator["command"])


def test_compose_puts_nginx_in_front_of_the_api_replicas() -> None:
    services = compose_config()["services"]
    api, nginx = services["api"], services["nginx"]
    # only nginx publishes a host port, so `--scale api=2` can run two api containers
    assert "ports" not in api and api["expose"] == ["8000"]
    assert [(p["published"], p["target"]) for p in nginx["ports"]] == [(8000, 8080)]
    assert nginx["depends_on"] == {"api": {"condition": "service_healthy"}}
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in nginx["volumes"]}
    assert Path(mounts["/etc/nginx/templates/anomaly.conf.template"]) == NGINX_TEMPLATE
    env = nginx["environment"]
    # the image renders every placeholder of the template from the environment, and nothing else
    assert set(re.findall(r"\$\{(NGINX_[A-Z_]+)\}", NGINX_TEMPLATE.read_text())) <= set(env)
    assert env["NGINX_ENVSUBST_FILTER"] == "^NGINX_" and env["NGINX_LISTEN"] == "8080"
    # what nginx accepts is what the api accepts; the health check is the one the routing test runs
    max_body = api["environment"].get(
        "ANOMALY_MAX_BODY_BYTES", Settings.model_fields["max_body_bytes"].default
    )
    assert int(env["NGINX_MAX_BODY"]) == int(max_body)
    assert f"server api:8000 resolve {HEALTH};" in env["NGINX_API_SERVERS"]
    assert "resolver 127.0.0.11" in env["NGINX_API_SERVERS"]  # Docker's DNS: every replica of `api`
    version = tuple(int(part) for part in nginx["image"].rpartition(":")[2].split("."))
    assert version >= (1, 27, 3)  # `server ... resolve` in open-source nginx
    assert nginx["read_only"] and nginx["cap_drop"] == ["ALL"] and "/etc/nginx/conf.d" in nginx["tmpfs"]


def test_compose_s_nginx_configuration_is_valid(tmp_path: Path) -> None:
    """The template with compose's values through `nginx -t` (Debian's nginx predates `resolve`, 1.27.3:
    the name is resolved once here, by the system, instead)."""
    env = dict(compose_config()["services"]["nginx"]["environment"])
    servers = env["NGINX_API_SERVERS"].replace(" resolve ", " ").replace("server api:", "server localhost:")
    env["NGINX_API_SERVERS"] = re.sub(r"resolver [^;]*;", "", servers)
    nginx_config(tmp_path, {k: v for k, v in env.items() if k != "NGINX_ENVSUBST_FILTER"})


def test_compose_settings_come_from_the_environment(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("SIMULATOR_RATE=50\nANOMALY_ADMIN_TOKEN=s3cret\n")
    services = compose_config("--env-file", str(env))["services"]
    assert "--rate=50" in services["simulator"]["command"]
    assert services["api"]["environment"]["ANOMALY_ADMIN_TOKEN"] == "s3cret"


def test_the_gpu_profile_resolves() -> None:
    assert set(compose_config("--profile", "gpu")["services"]) == SERVICES
