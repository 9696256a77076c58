"""The Kubernetes overlays: rendered, valid against the Kubernetes schemas, and true to the code."""

from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import typer.main
import yaml

from herald.cli import app
from herald.reference import service_settings
from herald.stack import APPS, SERVICES
from kernel.contracts import CONSUMERS, STREAMS
from tests.deploy.crd_schemas import CRD_SCHEMAS
from tests.deploy.manifests import (
    K8S,
    KUBECTL,
    NO_KUBECTL,
    OVERLAYS,
    Manifests,
    Obj,
    containers,
    load,
    pod_spec,
    render,
    selects,
    snapshot_path,
    strip_header,
)

# The oldest Kubernetes Herald supports and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
KEDA_JETSTREAM_KEYS = {"natsServerMonitoringEndpoint", "account", "stream", "consumer", "lagThreshold"}
CONSUMER_SERVICES = set(CONSUMERS)
HTTP_ONLY_SERVICES = set(SERVICES) - CONSUMER_SERVICES
# The Secrets the base templates (the prod overlay leaves them to the operator), by name.
SECRET_TEMPLATES = {d["metadata"]["name"]: d for d in yaml.safe_load_all((K8S / "base" / "secret.template.yaml").read_text())}


@pytest.fixture(params=OVERLAYS)
def m(request: pytest.FixtureRequest) -> Manifests:
    return load(request.param)


@pytest.fixture
def prod() -> Manifests:
    return load("prod")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_committed_rendering_is_current(overlay: str) -> None:
    if not KUBECTL:
        pytest.skip(NO_KUBECTL)
    fresh = render(overlay)
    assert strip_header(snapshot_path(overlay).read_text()) == fresh, (
        f"k8s/rendered/{overlay}.yaml is stale: run `make k8s` and commit it"
    )


def test_every_object_is_valid_against_its_schema(m: Manifests) -> None:
    problems = []
    for obj in m.objects:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        crd = CRD_SCHEMAS.get((obj["apiVersion"], obj["kind"]))
        if crd is not None:
            try:
                jsonschema.validate(obj, crd)
            except jsonschema.ValidationError as exc:
                problems.append(f"{where}: {exc.message} at {list(exc.absolute_path)}")
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                problems.append(f"{where} (Kubernetes {version}): {exc.message} at {list(exc.path)}")
            except kubernetes_validate.SchemaNotFoundError:
                problems.append(f"{where}: no schema for {obj['apiVersion']} {obj['kind']}")
    assert not problems, "\n".join(problems)


def test_every_service_has_a_deployment_and_a_service(m: Manifests) -> None:
    deployments, services = m.of("Deployment"), m.of("Service")
    assert set(deployments) == set(SERVICES)
    for name in SERVICES:
        selector = deployments[name]["spec"]["selector"]
        assert selects(services[name]["spec"]["selector"], deployments[name]["spec"]["template"]["metadata"]["labels"])
        assert selects(selector, deployments[name]["spec"]["template"]["metadata"]["labels"])
        port = next(p for p in pod_spec(deployments[name])["containers"][0]["ports"] if p["name"] == "http")
        assert services[name]["spec"]["ports"][0]["targetPort"] == "http", name
        assert port["containerPort"] == service_settings()["port"].defaults[name]


def test_prod_scales_http_services_on_cpu_and_consumers_on_their_own_backlog(prod: Manifests) -> None:
    hpas, scaled = prod.of("HorizontalPodAutoscaler"), prod.of("ScaledObject")
    assert {h["spec"]["scaleTargetRef"]["name"] for h in hpas.values()} == HTTP_ONLY_SERVICES
    assert {s["spec"]["scaleTargetRef"]["name"] for s in scaled.values()} == CONSUMER_SERVICES
    for hpa in hpas.values():
        (metric,) = hpa["spec"]["metrics"]
        assert metric["resource"]["name"] == "cpu"
    for obj in scaled.values():
        service = obj["spec"]["scaleTargetRef"]["name"]
        types = [t["type"] for t in obj["spec"]["triggers"]]
        assert sorted(types) == ["cpu", "nats-jetstream"], f"{service}: {types}"


def test_keda_triggers_name_the_stream_and_durable_the_code_declares(prod: Manifests) -> None:
    for obj in prod.of("ScaledObject").values():
        service = obj["spec"]["scaleTargetRef"]["name"]
        (trigger,) = [t for t in obj["spec"]["triggers"] if t["type"] == "nats-jetstream"]
        meta = trigger["metadata"]
        assert KEDA_JETSTREAM_KEYS <= set(meta), f"{service}: missing {KEDA_JETSTREAM_KEYS - set(meta)}"
        stream, durable, _ = CONSUMERS[service]
        assert (meta["stream"], meta["consumer"]) == (stream, durable), service
        assert meta["stream"] in STREAMS
        assert int(meta["lagThreshold"]) > 0
        host, port = meta["natsServerMonitoringEndpoint"].rsplit(":", 1)
        assert port == "8222" and host.startswith("nats-headless."), "KEDA must reach each NATS server by name"


def test_dev_runs_one_replica_of_everything_without_autoscalers() -> None:
    dev = load("dev")
    assert not dev.of("ScaledObject") and not dev.of("HorizontalPodAutoscaler")
    assert {d["spec"]["replicas"] for d in dev.of("Deployment").values()} == {1}
    assert set(dev.of("StatefulSet")) == {"nats", "postgres"}
    nats = pod_spec(dev.one("StatefulSet", "nats"))["containers"][0]
    assert "--jetstream" in nats["args"] and {p["containerPort"] for p in nats["ports"]} == {4222, 8222}


def test_every_deployment_has_probes_resources_and_a_locked_down_security_context(m: Manifests) -> None:
    for name, deployment in m.of("Deployment").items():
        spec = pod_spec(deployment)
        pod_security = spec["securityContext"]
        assert pod_security["runAsNonRoot"] is True and pod_security["seccompProfile"]["type"] == "RuntimeDefault"
        assert spec["automountServiceAccountToken"] is False
        assert spec["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"
        for container in containers(deployment):
            where = f"{m.overlay} {name}/{container['name']}"
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][bound]), f"{where}: {bound}"
        (main,) = spec["containers"]
        assert main["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert main["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert main["startupProbe"]["httpGet"]["path"] == "/healthz"
        assert annotations["prometheus.io/port"] == str(main["ports"][0]["containerPort"])
        mounts = {v["mountPath"] for v in main["volumeMounts"]}
        assert "/tmp" in mounts, f"{where}: a read-only root needs a writable /tmp"


def test_grace_period_outlasts_the_ack_wait_so_sigterm_drains_in_flight_work(m: Manifests) -> None:
    config = m.one("ConfigMap", "herald-config")["data"]
    for name, deployment in m.of("Deployment").items():
        spec = pod_spec(deployment)
        env = {e["name"]: e.get("value") for e in spec["containers"][0].get("env", [])}
        ack_wait = float(env.get("HERALD_ACK_WAIT_SECONDS") or config.get("HERALD_ACK_WAIT_SECONDS") or 0)
        pre_stop = spec["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
        pause = float(pre_stop[1]) if pre_stop[0] == "sleep" else 0.0
        assert spec["terminationGracePeriodSeconds"] > pause + ack_wait, name


def _secret_keys(m: Manifests, name: str) -> set[str]:
    """The keys of a Secret the overlay renders, or (where it leaves it to the operator) the template's."""
    found = m.of("Secret").get(name) or SECRET_TEMPLATES.get(name, {})
    keys = {**found.get("data", {}), **found.get("stringData", {})}
    assert keys, f"{m.overlay}: secret {name} is neither rendered nor templated"
    return set(keys)


def _provided(m: Manifests, container: Obj) -> tuple[set[str], set[str]]:
    """(names a container gets from ConfigMaps or plain env, names it gets from Secrets)."""
    plain: set[str] = set()
    secret: set[str] = set()
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            plain |= set(m.one("ConfigMap", source["configMapRef"]["name"])["data"])
        else:
            name = source["secretRef"]["name"]
            # Where the overlay leaves the Secret to the operator (prod), it must hold the template's keys.
            secret |= _secret_keys(m, name)
    for entry in container.get("env", []):
        ref = entry.get("valueFrom", {}).get("secretKeyRef")
        if ref and ref["name"] in SECRET_TEMPLATES:
            assert ref["key"] in _secret_keys(m, ref["name"]), f"{m.overlay}: {ref} names a key the Secret lacks"
        (secret if ref else plain).add(entry["name"])
    return plain, secret


def test_every_setting_a_service_reads_is_provided_and_secrets_stay_in_secrets(m: Manifests) -> None:
    settings = service_settings()
    config_keys = set(m.one("ConfigMap", "herald-config")["data"])
    for s in settings.values():
        if s.secret:
            assert s.env not in config_keys, f"{s.env} is a secret but sits in the ConfigMap"
    for name, deployment in m.of("Deployment").items():
        (main,) = pod_spec(deployment)["containers"]
        plain, secret = _provided(m, main)
        for s in settings.values():
            if name not in s.defaults:
                continue
            if s.secret:
                if s.required:
                    assert s.env in secret, f"{m.overlay} {name}: required secret {s.env} is not provided"
            elif not s.required:
                assert s.env in plain | secret, f"{m.overlay} {name}: {s.env} is not set by the ConfigMap or env"
            else:
                assert s.env in plain | secret, f"{m.overlay} {name}: required {s.env} is not provided"


def test_only_the_gateway_holds_the_key_that_signs_for_any_workspace(m: Manifests) -> None:
    for obj in [*m.of("Deployment").values(), *m.of("Job").values()]:
        main = pod_spec(obj)["containers"]
        for container in containers(obj):
            plain, secret = _provided(m, container)
            holds = "HERALD_GATEWAY_SIGNING_KEY" in plain | secret
            serves_gateway = obj["metadata"]["name"] == "gateway" and container in main
            assert holds == serves_gateway, (obj["metadata"]["name"], container["name"])
            if obj["kind"] == "Deployment":
                assert "HERALD_GATEWAY_PUBLIC_KEYS" in plain | secret, obj["metadata"]["name"]


def test_migrations_run_in_a_job_and_services_wait_for_them(m: Manifests) -> None:
    job = m.one("Job", "herald-migrate")
    (container,) = pod_spec(job)["containers"]
    assert container["args"] == ["migrate"]
    plain, secret = _provided(m, container)
    assert {"HERALD_DATABASE_URL", "HERALD_NATS_URL"} <= plain | secret
    assert "HERALD_STREAM_REPLICAS" in plain
    for name, deployment in m.of("Deployment").items():
        (init,) = pod_spec(deployment)["initContainers"]
        assert init["args"][:2] == ["migrate", "--wait"], name
        assert "HERALD_DATABASE_URL" in set.union(*_provided(m, init)), name


def _parses(args: list[str]) -> None:
    """The herald CLI accepts these arguments (parsed by Click, not run)."""
    command = typer.main.get_command(app)
    with command.make_context("herald", list(args), resilient_parsing=False) as ctx:
        sub_name, sub, rest = command.resolve_command(ctx, list(args))
        assert sub is not None, args
        sub.make_context(sub_name, rest, parent=ctx)


def test_image_and_commands_agree_with_the_cli(m: Manifests) -> None:
    images = set()
    for obj in [*m.of("Deployment").values(), *m.of("Job").values()]:
        for container in containers(obj):
            images.add(container["image"])
            _parses(container["args"])
    assert len(images) == 1, f"one image for every process, found {images}"
    for name, deployment in m.of("Deployment").items():
        args = pod_spec(deployment)["containers"][0]["args"]
        assert args == ["serve", name] and name in APPS


def test_network_policies_deny_by_default_and_open_only_herald_paths(m: Manifests) -> None:
    policies = m.of("NetworkPolicy")
    deny = policies["default-deny"]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert not deny.get("ingress") and not deny.get("egress")

    labels = {n: d["spec"]["template"]["metadata"]["labels"] for n, d in m.of("Deployment").items()}

    def ingress_from_namespace(namespace: str) -> set[str]:
        found = set()
        for policy in policies.values():
            for rule in policy["spec"].get("ingress", []):
                for peer in rule.get("from", []):
                    ns = peer.get("namespaceSelector", {}).get("matchLabels", {})
                    if ns.get("kubernetes.io/metadata.name") == namespace:
                        found |= {n for n, lab in labels.items() if selects(policy["spec"]["podSelector"], lab)}
        return found

    assert ingress_from_namespace("ingress-nginx") == {"gateway"}, "only the gateway takes outside traffic"

    def may_reach(source: str, target_labels: dict[str, str], port: int | str) -> bool:
        ingress_ok = egress_ok = False
        for policy in policies.values():
            spec = policy["spec"]
            for rule in spec.get("egress", []):
                if selects(spec["podSelector"], labels[source]) and any(
                    selects(peer.get("podSelector", {}), target_labels) for peer in rule.get("to", [])
                ) and any(p["port"] == port for p in rule.get("ports", [])):
                    egress_ok = True
            for rule in spec.get("ingress", []):
                if selects(spec["podSelector"], target_labels) and any(
                    "namespaceSelector" not in peer and selects(peer.get("podSelector", {}), labels[source])
                    for peer in rule.get("from", [])
                ) and any(p["port"] == port for p in rule.get("ports", [])):
                    ingress_ok = True
        return ingress_ok and egress_ok

    for service in SERVICES:
        if service != "gateway":
            assert may_reach("gateway", labels[service], "http"), f"gateway cannot reach {service}"
            assert not may_reach(service, labels["gateway"], "http"), f"{service} may call the gateway"
    nats = {"app.kubernetes.io/name": "nats"}
    postgres = (
        m.one("StatefulSet", "postgres")["spec"]["template"]["metadata"]["labels"]
        if m.overlay == "dev"
        else {"cnpg.io/cluster": m.one("Cluster", "herald-db")["metadata"]["name"]}
    )
    for service in SERVICES:
        if service != "gateway":
            assert may_reach(service, nats, 4222), f"{service} cannot reach NATS"
    for service in ("gateway", "profiles", "segmenter", "scheduler", "dispatcher"):
        assert may_reach(service, postgres, 5432), f"{service} cannot reach PostgreSQL"


def test_every_service_has_a_disruption_budget(m: Manifests) -> None:
    budgets = m.of("PodDisruptionBudget")
    for name, deployment in m.of("Deployment").items():
        (budget,) = [
            b for b in budgets.values() if selects(b["spec"]["selector"], deployment["spec"]["template"]["metadata"]["labels"])
        ]
        assert budget["spec"]["maxUnavailable"] == 1, name


def test_prod_is_redundant_and_never_ships_placeholder_secrets(prod: Manifests) -> None:
    for name, deployment in prod.of("Deployment").items():
        assert deployment["spec"]["replicas"] >= 2, name
    assert all(h["spec"]["minReplicas"] >= 2 for h in prod.of("HorizontalPodAutoscaler").values())
    assert all(s["spec"]["minReplicaCount"] >= 2 for s in prod.of("ScaledObject").values())
    for secret in SECRET_TEMPLATES:
        assert secret not in prod.of("Secret"), f"prod must not overwrite the operator's Secret {secret}"
    assert prod.one("ConfigMap", "herald-config")["data"]["HERALD_ENV"] == "production"
    cluster = prod.one("Cluster", "herald-db")
    assert cluster["spec"]["instances"] == 3
    app_secret = f"{cluster['metadata']['name']}-app"
    for obj in [*prod.of("Deployment").values(), *prod.of("Job").values()]:
        for container in containers(obj):
            (url,) = [e for e in container["env"] if e["name"] == "HERALD_DATABASE_URL"]
            assert url["valueFrom"]["secretKeyRef"] == {"name": app_secret, "key": "uri"}


def test_prod_nats_values_give_a_three_node_jetstream_cluster_keda_can_read(prod: Manifests) -> None:
    values: dict[str, Any] = yaml.safe_load((K8S / "overlays" / "prod" / "nats-values.yaml").read_text())
    config = values["config"]
    assert config["cluster"]["enabled"] is True and config["cluster"]["replicas"] == 3
    assert config["jetstream"]["enabled"] is True and config["jetstream"]["fileStore"]["enabled"] is True
    assert config["jetstream"]["fileStore"]["pvc"]["enabled"] is True
    assert config["monitor"]["enabled"] is True and values["service"]["ports"]["monitor"]["enabled"] is True
    replicas = int(prod.one("ConfigMap", "herald-config")["data"]["HERALD_STREAM_REPLICAS"])
    assert replicas == config["cluster"]["replicas"], "each stream should live on every NATS server"
    for obj in prod.of("ScaledObject").values():
        endpoint = obj["spec"]["triggers"][0]["metadata"]["natsServerMonitoringEndpoint"]
        assert endpoint.endswith(f":{config['monitor']['port']}")
