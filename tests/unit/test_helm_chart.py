"""The Helm chart (deploy/helm/veil), rendered offline by Helm's own engine (the helm-python-sdk wheel bundles
it: no helm binary, no cluster) with the default and the GPU values, every object validated against the
Kubernetes schemas (kubernetes-validate) and KEDA's ScaledObject against its CRD's schema (vendored in
deploy/helm/schemas), then the properties deploy/README.md promises checked on every pod spec."""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "veil"
KEDA_SCHEMA = REPO / "deploy" / "helm" / "schemas" / "keda.sh_scaledobjects.v1alpha1.yaml"
# The oldest Kubernetes the chart claims (Chart.yaml kubeVersion) and the newest the schemas know.
KUBE_VERSIONS = ("1.27.0", kubernetes_validate.latest_version())
# What a real install must give besides the defaults: an external Redis and S3.
EXTERNAL = {
    "secrets": {"redisUrl": "redis://:s3cret@redis.example.internal:6380/2", "s3AccessKeyId": "AK"},
    "config": {"VEIL_S3__ENDPOINT_URL": "https://s3.eu-west-1.amazonaws.com"},
}
POD_KINDS = {"Deployment", "StatefulSet"}

Obj = dict[str, Any]


def merged(*layers: dict[str, Any]) -> dict[str, Any]:
    """Values files merged as `helm -f a -f b` does: maps deeply, anything else replaced."""
    out: dict[str, Any] = {}

    def merge(into: dict[str, Any], layer: dict[str, Any]) -> None:
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = copy.deepcopy(value)

    for layer in layers:
        merge(out, layer)
    return out


def values_file(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / name).read_text())
    return loaded


def render(values: dict[str, Any]) -> list[Obj]:
    """`helm template veil deploy/helm/veil` with these values (over the chart's own), as objects."""
    with helm_python.Chart.load(str(CHART)) as chart:
        manifests = chart.render(values, name="veil", namespace="veil")
    return [doc for text in manifests.values() for doc in yaml.safe_load_all(text) if doc]


def render_error(values: dict[str, Any]) -> str:
    with pytest.raises(helm_python.HelmRenderError) as caught:
        render(values)
    return str(caught.value)


def closed(schema: Any) -> Any:
    """The schema with unknown fields refused (`additionalProperties: false` wherever properties are listed),
    as the API server's strict field validation treats a CRD's structural schema."""
    if isinstance(schema, dict):
        out = {key: closed(value) for key, value in schema.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    return schema


KEDA_VALIDATOR = jsonschema.Draft7Validator(closed(yaml.safe_load(KEDA_SCHEMA.read_text())))


def validate(obj: Obj) -> None:
    if obj["kind"] == "ScaledObject":
        assert obj["apiVersion"] == "keda.sh/v1alpha1"
        KEDA_VALIDATOR.validate(obj)
        return
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(obj, version, strict=True)


def pod_specs(objects: list[Obj]) -> Iterator[tuple[str, Obj]]:
    for obj in objects:
        if obj["kind"] in POD_KINDS:
            yield obj["metadata"]["name"], obj["spec"]["template"]["spec"]


def named(objects: list[Obj], kind: str) -> dict[str, Obj]:
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == kind}


def container_of(objects: list[Obj], deployment: str) -> Obj:
    """The first container of a Deployment's pods."""
    first: Obj = named(objects, "Deployment")[deployment]["spec"]["template"]["spec"]["containers"][0]
    return first


def readiness_path(objects: list[Obj]) -> str:
    path: str = container_of(objects, "veil-gateway")["readinessProbe"]["httpGet"]["path"]
    return path


def env_of(container: Obj) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("env", [])}


SCENARIOS = {
    "default": merged(EXTERNAL),
    "gpu": merged(values_file("values-gpu.yaml"), EXTERNAL),
    "trial": {"trial": {"enabled": True}},
    "prometheus": merged(
        EXTERNAL, {"autoscaling": {"trigger": "prometheus"}, "networkPolicy": {"enabled": False}}
    ),
}


@pytest.fixture(scope="module", params=sorted(SCENARIOS))
def rendered(request: pytest.FixtureRequest) -> list[Obj]:
    return render(SCENARIOS[request.param])


def test_every_object_validates_against_its_schema(rendered: list[Obj]) -> None:
    kinds = {obj["kind"] for obj in rendered}
    assert {"Deployment", "ScaledObject", "PodDisruptionBudget", "ConfigMap"} <= kinds
    for obj in rendered:
        validate(obj)


def test_every_pod_runs_locked_down(rendered: list[Obj]) -> None:
    specs = dict(pod_specs(rendered))
    assert specs
    for name, spec in specs.items():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["runAsUser"] > 0, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        for container in spec["containers"] + spec.get("initContainers", []):
            ctx = container["securityContext"]
            where = f"{name}/{container['name']}"
            assert ctx["runAsNonRoot"] is True, where
            assert ctx["allowPrivilegeEscalation"] is False, where
            assert ctx["readOnlyRootFilesystem"] is True, where
            assert ctx["capabilities"] == {"drop": ["ALL"]}, where
            assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}, where
            # A read-only root needs somewhere to write: every container gets /tmp.
            assert "/tmp" in {mount["mountPath"] for mount in container["volumeMounts"]}, where


def test_every_container_has_probes_and_resources(rendered: list[Obj]) -> None:
    for name, spec in pod_specs(rendered):
        for container in spec["containers"]:
            where = f"{name}/{container['name']}"
            assert "readinessProbe" in container, where
            assert "livenessProbe" in container, where
            requests = container["resources"]["requests"]
            assert {"cpu", "memory"} <= set(requests), where
            assert "memory" in container["resources"]["limits"], where


def test_gateway_ready_on_readyz_and_alive_on_healthz() -> None:
    gateway = named(render(SCENARIOS["default"]), "Deployment")["veil-gateway"]
    container = gateway["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # The HPA owns the count: a replicas field would reset it at every upgrade.
    assert "replicas" not in gateway["spec"]
    hpa = named(render(SCENARIOS["default"]), "HorizontalPodAutoscaler")["veil-gateway"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "veil-gateway"


def test_gateway_readiness_skips_workers_when_every_pool_can_sleep_at_zero() -> None:
    """/readyz needs a worker; a pool at zero waits for jobs that an unready gateway would never take."""
    values = merged(EXTERNAL, {"workers": {"defaults": {"autoscaling": {"minReplicaCount": 0}}}})
    assert readiness_path(render(values)) == "/healthz"
    # With the GPU values the CPU pool sleeps at zero but the GPU pool keeps one: /readyz stays.
    assert readiness_path(render(SCENARIOS["gpu"])) == "/readyz"


def test_each_scaled_object_targets_its_worker_deployment_on_the_arq_queue(rendered: list[Obj]) -> None:
    deployments = named(rendered, "Deployment")
    scaled = named(rendered, "ScaledObject")
    workers = {name for name in deployments if name.startswith("veil-worker-")}
    assert workers
    assert set(scaled) == workers
    for name, obj in scaled.items():
        target = obj["spec"]["scaleTargetRef"]
        assert (target["apiVersion"], target["kind"], target["name"]) == ("apps/v1", "Deployment", name)
        assert "replicas" not in deployments[name]["spec"]  # KEDA's HPA owns the count
        (trigger,) = obj["spec"]["triggers"]
        if trigger["type"] == "redis":
            assert trigger["metadata"]["listName"] == "veil:queue"
        else:
            assert trigger["type"] == "prometheus"
            assert "veil_queue_depth" in trigger["metadata"]["query"]


def test_redis_trigger_reads_the_url_apart() -> None:
    (scaled,) = named(render(SCENARIOS["default"]), "ScaledObject").values()
    metadata = scaled["spec"]["triggers"][0]["metadata"]
    assert metadata["address"] == "redis.example.internal:6380"
    assert metadata["databaseIndex"] == "2"
    assert metadata["enableTLS"] == "false"
    assert metadata["passwordFromEnv"] == "REDIS_PASSWORD"
    secret = named(render(SCENARIOS["default"]), "Secret")["veil"]
    assert secret["stringData"]["REDIS_PASSWORD"] == "s3cret"
    tls = merged(EXTERNAL, {"secrets": {"redisUrl": "rediss://cache.example"}})
    (scaled,) = named(render(tls), "ScaledObject").values()
    metadata = scaled["spec"]["triggers"][0]["metadata"]
    assert (metadata["address"], metadata["enableTLS"], metadata["databaseIndex"]) == (
        "cache.example:6379",
        "true",
        "0",
    )
    assert "passwordFromEnv" not in metadata


def test_a_sentinel_url_scales_through_the_same_sentinels() -> None:
    """shared/redisurl.py's Sentinel form, which Go's URL parser refuses (a list of hosts)."""
    url = "rediss+sentinel://app:pa55@s1:26380,s2/mymaster/4?sentinel_password=x"
    objects = render(merged(EXTERNAL, {"secrets": {"redisUrl": url}}))
    for obj in objects:
        validate(obj)
    (scaled,) = named(objects, "ScaledObject").values()
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis-sentinel"
    assert trigger["metadata"] == {
        "addresses": "s1:26380,s2:26379",
        "sentinelMaster": "mymaster",
        "listName": "veil:queue",
        "listLength": "8",
        "activationListLength": "0",
        "databaseIndex": "4",
        "enableTLS": "true",
        "passwordFromEnv": "REDIS_PASSWORD",
        "usernameFromEnv": "REDIS_USERNAME",
    }
    secret = named(objects, "Secret")["veil"]["stringData"]
    assert (secret["REDIS_USERNAME"], secret["REDIS_PASSWORD"]) == ("app", "pa55")


def test_scale_to_zero_is_a_value() -> None:
    values = merged(EXTERNAL, {"workers": {"pools": {"cpu": {"autoscaling": {"minReplicaCount": 0}}}}})
    (scaled,) = named(render(values), "ScaledObject").values()
    assert scaled["spec"]["minReplicaCount"] == 0


def test_gpu_pool_requests_a_gpu_on_gpu_nodes() -> None:
    objects = render(SCENARIOS["gpu"])
    deployments = named(objects, "Deployment")
    assert {"veil-worker-cpu", "veil-worker-gpu"} <= set(deployments)
    spec = deployments["veil-worker-gpu"]["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["image"].startswith("veil/worker-cuda:")
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert "VEIL_WORKER__INFERENCE_LANES" not in env_of(container)  # the worker's GPU default
    cpu = deployments["veil-worker-cpu"]["spec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in cpu["resources"].get("limits", {})
    assert env_of(cpu)["VEIL_WORKER__INFERENCE_LANES"] == "2"
    assert named(objects, "ScaledObject")["veil-worker-cpu"]["spec"]["minReplicaCount"] == 0
    # Without the GPU values there is no GPU pool at all.
    assert "veil-worker-gpu" not in named(render(SCENARIOS["default"]), "Deployment")


def test_cpu_lanes_follow_the_cores_requested() -> None:
    values = merged(EXTERNAL, {"workers": {"pools": {"cpu": {"resources": {"requests": {"cpu": "3500m"}}}}}})
    assert env_of(container_of(render(values), "veil-worker-cpu"))["VEIL_WORKER__INFERENCE_LANES"] == "3"


def test_workers_run_their_models_from_a_writable_copy(rendered: list[Obj]) -> None:
    """The worker locks its model directory and may build a variant there: not possible in the image's
    /models as a non-root user on a read-only root, so an init container copies them to a volume."""
    for name, spec in pod_specs(rendered):
        if not name.startswith("veil-worker-"):
            continue
        (init,) = spec["initContainers"]
        assert "/models/." in init["command"][-1]
        (worker,) = spec["containers"]
        model_dir = env_of(worker)["VEIL_WORKER__MODEL_DIR"]
        mounts = {mount["mountPath"]: mount["name"] for mount in worker["volumeMounts"]}
        assert model_dir.startswith("/var/lib/veil/") and mounts["/var/lib/veil"] == "models"


def grace(objects: list[Obj], deployment: str) -> int:
    seconds: int = named(objects, "Deployment")[deployment]["spec"]["template"]["spec"][
        "terminationGracePeriodSeconds"
    ]
    return seconds


def test_worker_grace_period_is_the_drain_plus_a_margin_and_the_drain_the_job_timeout() -> None:
    objects = render(SCENARIOS["default"])
    assert grace(objects, "veil-worker-cpu") == 45 + 15
    assert named(objects, "ConfigMap")["veil"]["data"]["VEIL_WORKER__DRAIN_SECONDS"] == "45"
    longer = render(merged(EXTERNAL, {"config": {"VEIL_WORKER__JOB_TIMEOUT_SECONDS": "100"}}))
    assert grace(longer, "veil-worker-cpu") == 115
    data = named(longer, "ConfigMap")["veil"]["data"]
    assert (data["VEIL_WORKER__JOB_TIMEOUT_SECONDS"], data["VEIL_WORKER__DRAIN_SECONDS"]) == ("100", "100")
    # A drain given outright (the rest handed back after it) sets the grace period instead.
    short = render(merged(EXTERNAL, {"config": {"VEIL_WORKER__DRAIN_SECONDS": "20"}}))
    assert grace(short, "veil-worker-cpu") == 35
    assert named(short, "ConfigMap")["veil"]["data"]["VEIL_WORKER__DRAIN_SECONDS"] == "20"


def test_gateway_grace_period_covers_the_shutdown_delay_and_the_longest_request() -> None:
    objects = render(SCENARIOS["default"])
    data = named(objects, "ConfigMap")["veil"]["data"]
    assert (data["VEIL_GATEWAY__SHUTDOWN_DELAY_SECONDS"], data["VEIL_GATEWAY__DRAIN_SECONDS"]) == ("5", "30")
    assert grace(objects, "veil-gateway") == 5 + 30 + 10
    slow = render(merged(EXTERNAL, {"config": {"VEIL_GATEWAY__FACADE_TIMEOUT_SECONDS": "120"}}))
    assert grace(slow, "veil-gateway") == 5 + 120 + 10


def test_every_pool_has_a_disruption_budget(rendered: list[Obj]) -> None:
    budgets = named(rendered, "PodDisruptionBudget")
    for name in named(rendered, "Deployment"):
        assert name in budgets, name


def test_network_policies_keep_workers_to_redis_s3_dns_and_the_internet() -> None:
    policy = named(render(SCENARIOS["default"]), "NetworkPolicy")["veil-worker"]
    egress = policy["spec"]["egress"]
    ports = [{port["port"] for port in rule.get("ports", [])} for rule in egress]
    assert {53} in ports and {6379} in ports and {443} in ports
    internet = egress[-1]["to"][0]["ipBlock"]
    assert internet["cidr"] == "0.0.0.0/0"
    assert {"10.0.0.0/8", "169.254.0.0/16"} <= set(internet["except"])
    # Ingress: only the metrics port.
    assert [port["port"] for rule in policy["spec"]["ingress"] for port in rule["ports"]] == [9108]


def test_trial_runs_durable_redis_and_s3_in_the_release() -> None:
    objects = render(SCENARIOS["trial"])
    redis = named(objects, "StatefulSet")["veil-redis"]
    args = redis["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--appendfsync") + 1] == "everysec"
    assert "veil-s3" in named(objects, "StatefulSet")
    data = named(objects, "ConfigMap")["veil"]["data"]
    assert data["VEIL_S3__ENDPOINT_URL"] == "http://veil-s3:8333"
    redis_url = named(objects, "Secret")["veil"]["stringData"]["VEIL_REDIS__URL"]
    assert redis_url == "redis://veil-redis.veil.svc:6379/0"
    # KEDA's operator runs in its own namespace: the address is qualified.
    (scaled,) = named(objects, "ScaledObject").values()
    assert scaled["spec"]["triggers"][0]["metadata"]["address"] == "veil-redis.veil.svc:6379"


def test_existing_secret_is_used_and_needs_the_redis_address_for_keda() -> None:
    values = merged(
        {"config": EXTERNAL["config"]},
        {"secrets": {"existingSecret": "veil-prod"}, "autoscaling": {"redis": {"address": "r.example:6379"}}},
    )
    objects = render(values)
    assert "Secret" not in {obj["kind"] for obj in objects}
    assert {"secretRef": {"name": "veil-prod"}} in container_of(objects, "veil-gateway")["envFrom"]
    values["autoscaling"] = {}
    assert "autoscaling.redis.address (host:port) is required" in render_error(values)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"config": EXTERNAL["config"]}, "secrets.redisUrl is required"),
        ({"secrets": EXTERNAL["secrets"]}, "config.VEIL_S3__ENDPOINT_URL is required"),
        (merged(EXTERNAL, {"autoscaling": {"trigger": "cpu"}}), "autoscaling.trigger must be redis or"),
        (
            merged(EXTERNAL, {"secrets": {"redisUrl": "unix:///run/redis.sock"}}),
            "cannot reach Redis by a unix:// URL: set autoscaling.redis.address",
        ),
    ],
)
def test_incomplete_values_fail_with_a_reason(values: dict[str, Any], message: str) -> None:
    assert message in render_error(values)


def test_chart_lints_clean_and_follows_the_package_version() -> None:
    report = helm_python.lint(str(CHART), SCENARIOS["default"], strict=True)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"]
