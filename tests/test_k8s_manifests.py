"""deploy/k8s/: every overlay rendered by kustomize (kubectl's, via bin/kubectl), each document
checked against the Kubernetes schemas of a pinned version (kubernetes-validate, offline,
strict), and the properties the deployment relies on asserted on the rendered objects."""

from __future__ import annotations

import copy
import os
import re
import runpy
import secrets
import subprocess
import sys
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from shopapi.config import ROOT, Settings, setting_names
from tests.conftest import recreate_database

pytestmark = pytest.mark.no_db

K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("production", "staging")
# the Kubernetes version the manifests are checked against (kubectl 1.33 renders them)
KUBERNETES_VERSION = "1.33.0"
GUNICORN_CONF = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
# the Dockerfile's `useradd --uid`
IMAGE_UID = 10001
# settings that hold a password or a signing key: only ever in the Secret
SECRET_SETTINGS = {
    "SECRET_KEY",
    "DATABASE_URL",
    "DATABASE_DIRECT_URL",
    "DATABASE_READ_URL",
    "REDIS_URL",
    "SMTP_URL",
    "STRIPE_SECRET_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "ADMIN_PASSWORD",
}


def render(overlay: str) -> list[dict]:
    out = subprocess.run(
        [str(ROOT / "bin" / "kubectl"), "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=300,  # the first run fetches kubectl
    )
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def docs(request) -> list[dict]:
    return render(request.param)


def one(docs: list[dict], kind: str, name: str) -> dict:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def pod_templates(docs: list[dict]) -> list[tuple[str, dict]]:
    return [
        (f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"])
        for d in docs
        if d["kind"] in {"Deployment", "Job"}
    ]


def api_pod(docs: list[dict]) -> dict:
    return one(docs, "Deployment", "shopapi-api")["spec"]["template"]


def the_container(template: dict) -> dict:
    (container,) = template["spec"]["containers"]
    return container


def config_map(docs: list[dict]) -> dict:
    (cm,) = of_kind(docs, "ConfigMap")
    return cm


def secret_example() -> dict:
    return yaml.safe_load((K8S / "secret.example.yaml").read_text())


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def gunicorn_env_names() -> set[str]:
    """The environment variables gunicorn.conf.py reads (they are not app settings)."""
    text = (ROOT / "gunicorn.conf.py").read_text()
    return set(re.findall(r"""(?:environ\.get|_int_env)\(\s*["']([A-Z0-9_]+)["']""", text))


def quantity(value: str) -> float:
    """CPU cores or memory bytes of a Kubernetes quantity ("500m", "2", "256Mi")."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for suffix, factor in units.items():
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    return float(value)


# -------------------------------------------------------------------------- schemas


def test_every_rendered_document_validates_against_the_pinned_kubernetes_schemas(docs):
    kinds = {d["kind"] for d in docs}
    assert kinds >= {
        "ConfigMap",
        "Service",
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Job",
        "NetworkPolicy",
    }
    for doc in docs:
        # raises on any schema violation, unknown field (strict) or kind without a schema
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_secret_example_validates_too():
    kubernetes_validate.validate(secret_example(), KUBERNETES_VERSION, strict=True)


def test_strict_validation_catches_a_misspelled_field():
    """The check above means something: a typo in a probe's name is refused."""
    api = copy.deepcopy(one(render("production"), "Deployment", "shopapi-api"))
    container = the_container(api["spec"]["template"])
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(api, KUBERNETES_VERSION, strict=True)


# -------------------------------------------------------------------------- the API pods


def test_api_runs_the_images_gunicorn_command_on_its_port_with_both_probes(docs):
    container = the_container(api_pod(docs))
    dockerfile = (ROOT / "Dockerfile").read_text()
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile, re.M)
    assert cmd and container["command"] == yaml.safe_load(cmd.group(1))
    (port,) = container["ports"]
    assert port == {"name": "http", "containerPort": 8000}  # gunicorn.conf.py's default bind
    assert GUNICORN_CONF["bind"].endswith(":8000")
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    # gunicorn's default worker count is the node's CPU count: always set per pod
    workers = int(config_map(docs)["data"]["WEB_CONCURRENCY"])
    assert 2 <= workers <= quantity(container["resources"]["limits"]["cpu"])


def test_termination_grace_covers_the_prestop_pause_and_gunicorns_graceful_timeout(docs):
    spec = api_pod(docs)["spec"]
    pause = the_container(api_pod(docs))["lifecycle"]["preStop"]["exec"]["command"]
    assert pause[0] == "sleep" and int(pause[1]) >= 5
    # the preStop hook runs inside the grace period: gunicorn gets what is left of it
    assert (
        spec["terminationGracePeriodSeconds"] >= int(pause[1]) + GUNICORN_CONF["graceful_timeout"]
    )
    worker = one(docs, "Deployment", "shopapi-worker")["spec"]["template"]["spec"]
    assert worker["terminationGracePeriodSeconds"] >= 30


def test_every_pod_runs_as_the_images_user_without_privileges_on_a_read_only_root(docs):
    for name, template in pod_templates(docs):
        spec = template["spec"]
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["runAsUser"] == IMAGE_UID, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["capabilities"] == {"drop": ["ALL"]}, name
            # the one writable place (metric files, tempfile) is an emptyDir
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            volumes = {v["name"]: v for v in spec["volumes"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], name
    api = the_container(api_pod(docs))
    multiproc = {e["name"]: e["value"] for e in api["env"]}["PROMETHEUS_MULTIPROC_DIR"]
    assert multiproc.startswith("/tmp/")


def test_every_container_has_requests_and_limits(docs):
    for name, template in pod_templates(docs):
        for container in template["spec"]["containers"]:
            resources = container["resources"]
            for kind in ("cpu", "memory"):
                request = quantity(resources["requests"][kind])
                limit = quantity(resources["limits"][kind])
                assert 0 < request <= limit, (name, kind)
    # an API pod's measured peak (master 30 MiB + 2 workers x 74 MiB) fits its request
    api = the_container(api_pod(docs))["resources"]
    assert quantity(api["requests"]["memory"]) >= (30 + 2 * 74) * 2**20


# -------------------------------------------------------------------------- scaling objects


def test_hpa_scales_the_api_deployment_on_cpu_and_owns_its_replica_count(docs):
    (hpa,) = of_kind(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"]) == ("apps/v1", "Deployment")
    deployment = one(docs, "Deployment", target["name"])
    assert deployment["metadata"]["labels"]["app.kubernetes.io/component"] == "api"
    assert "replicas" not in deployment["spec"]  # an apply would fight the autoscaler
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    # utilization is relative to the request: there must be one
    assert "cpu" in the_container(deployment["spec"]["template"])["resources"]["requests"]


def test_pdb_service_and_api_network_policy_select_the_api_pods_and_nothing_else(docs):
    api_labels = api_pod(docs)["metadata"]["labels"]
    others = [t["metadata"]["labels"] for n, t in pod_templates(docs) if "shopapi-api" not in n]
    assert others
    (pdb,) = of_kind(docs, "PodDisruptionBudget")
    (service,) = of_kind(docs, "Service")
    policy = one(docs, "NetworkPolicy", "shopapi-api")
    for selector in (
        pdb["spec"]["selector"]["matchLabels"],
        service["spec"]["selector"],
        policy["spec"]["podSelector"]["matchLabels"],
    ):
        assert selects(selector, api_labels)
        assert not any(selects(selector, labels) for labels in others)
    assert pdb["spec"]["maxUnavailable"] == 1
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_only_the_ingress_controller_and_prometheus_reach_the_api_so_their_network_is_trusted(
    docs,
):
    """TRUSTED_PROXY_NETWORKS is the pod network (pod addresses change, so the ingress
    controller's cannot be listed). That is safe only because the API's NetworkPolicy admits
    connections from the ingress controller's and Prometheus' namespaces and nothing else: no
    other pod (our own workers and migration Job included) can send the API an X-Forwarded-For
    to pick its rate-limit bucket (issue 18 item 6)."""
    policy = one(docs, "NetworkPolicy", "shopapi-api")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    admitted = set()
    for rule in policy["spec"]["ingress"]:
        assert rule.get("from"), rule  # a rule without `from` admits every source
        assert rule["ports"] == [{"port": "http"}]
        for peer in rule["from"]:
            # no ipBlock, no podSelector (alone it means this namespace; with a namespace,
            # kustomize's includeSelectors labels would rewrite it), exactly one namespace
            assert list(peer) == ["namespaceSelector"], peer
            assert list(peer["namespaceSelector"]) == ["matchLabels"], peer
            ((label, namespace),) = peer["namespaceSelector"]["matchLabels"].items()
            assert label == "kubernetes.io/metadata.name"
            admitted.add(namespace)
    assert admitted == {"ingress-nginx", "monitoring"}
    assert policy["metadata"]["namespace"] not in admitted  # where the workers run
    for ingress in of_kind(docs, "Ingress"):
        assert ingress["spec"]["ingressClassName"] == "nginx"  # ingress-nginx's controller
    # and what is trusted is a private range, never an address a client on the internet has
    settings = Settings.from_env(manifest_env(docs))
    assert settings.trusted_proxy_networks
    assert all(network.is_private for network in settings.trusted_proxy_networks)


def test_the_example_reads_the_replica_directly_not_through_a_pooler():
    """Behind PgBouncer a dead replica keeps catalog reads waiting in the pooler (up to its
    query_wait_timeout, 120 s by default) instead of the app's 0.5 s fallback to the primary,
    which tests/cluster proves for a direct replica URL."""
    url = {key: urlsplit(value) for key, value in secret_example()["stringData"].items()}
    read, pooled, direct = (url[f"DATABASE_{kind}URL"] for kind in ("READ_", "", "DIRECT_"))
    assert pooled.port == 6432 and read.port == direct.port == 5432
    assert "pgbouncer" not in read.hostname and read.hostname != direct.hostname


def test_worker_runs_the_cli_worker_with_its_metrics_port(docs):
    worker = one(docs, "Deployment", "shopapi-worker")
    container = the_container(worker["spec"]["template"])
    assert container["command"] == ["python", "-m", "shopapi.cli", "worker"]
    port = str(Settings.from_env({"APP_ENV": "test"}).worker_metrics_port)
    assert container["ports"] == [{"name": "metrics", "containerPort": int(port)}]
    assert container["livenessProbe"]["httpGet"]["port"] == "metrics"
    assert worker["spec"]["replicas"] >= 1


# -------------------------------------------------------------------------- migrations


def test_migration_job_is_named_after_the_release_and_runs_shopapi_migrate(docs):
    (job,) = of_kind(docs, "Job")
    container = the_container(job["spec"]["template"])
    tag = container["image"].rpartition(":")[2]
    assert tag and job["metadata"]["name"] == f"shopapi-migrate-{tag}"
    # every process type runs the same release
    images = {the_container(t)["image"] for _, t in pod_templates(docs)}
    assert images == {container["image"]}
    # yoyo's apply through its Python API (shopapi.db.migrate), on DATABASE_DIRECT_URL
    assert container["command"] == ["python", "-m", "shopapi.cli", "migrate"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert job["metadata"]["annotations"]["argocd.argoproj.io/hook"] == "PreSync"


def test_the_pre_rollout_selector_picks_the_job_and_its_config_and_nothing_that_serves(docs):
    """Step 1 of a release (README "Kubernetes") applies only
    `-l 'app.kubernetes.io/component in (config,migrate)'`: the Job, and the ConfigMap it reads."""
    picked = [
        d
        for d in docs
        if d["metadata"].get("labels", {}).get("app.kubernetes.io/component")
        in {"config", "migrate"}
    ]
    kinds = sorted(d["kind"] for d in picked)
    assert kinds == ["ConfigMap", "Job", "NetworkPolicy"]
    (job,) = of_kind(picked, "Job")
    refs = {
        e["configMapRef"]["name"]
        for e in the_container(job["spec"]["template"])["envFrom"]
        if "configMapRef" in e
    }
    assert refs == {config_map(picked)["metadata"]["name"]}


def test_the_job_name_follows_the_overlays_tag(tmp_path):
    """Change the tag in a copy of an overlay: the Job's name changes with it."""
    copy_root = tmp_path / "k8s"
    subprocess.run(["cp", "-r", str(K8S), str(copy_root)], check=True)
    kustomization = copy_root / "overlays" / "staging" / "kustomization.yaml"
    text = kustomization.read_text()
    assert "newTag: 0.1.0" in text
    kustomization.write_text(text.replace("newTag: 0.1.0", "newTag: 2.7.1-rc2"))
    out = subprocess.run(
        [str(ROOT / "bin" / "kubectl"), "kustomize", str(kustomization.parent)],
        capture_output=True,
        text=True,
        check=True,
    )
    (job,) = [d for d in yaml.safe_load_all(out.stdout) if d and d["kind"] == "Job"]
    assert job["metadata"]["name"] == "shopapi-migrate-2.7.1-rc2"


def test_the_jobs_command_migrates_through_the_direct_url_with_the_manifests_env():
    """The Job's command, in the Job's environment (ConfigMap + Secret, placeholders filled):
    migrations apply on DATABASE_DIRECT_URL while DATABASE_URL (the pooler) is unreachable."""
    docs = render("production")
    (job,) = of_kind(docs, "Job")
    name = f"{os.environ.get('SHOPAPI_TEST_DB', 'shopapi_test')}_k8s_migrate"
    direct = recreate_database(name)
    try:
        env = manifest_env(docs)
        env["DATABASE_URL"] = "postgresql://shopapi@127.0.0.1:9/nowhere"  # nothing listens
        env["DATABASE_DIRECT_URL"] = direct
        command = the_container(job["spec"]["template"])["command"]
        assert command[0] == "python"
        out = subprocess.run(
            [sys.executable, *command[1:]],
            cwd=ROOT,
            env={"PATH": os.environ["PATH"], **env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        assert re.fullmatch(r"applied [1-9]\d* migration\(s\)\n", out.stdout)
    finally:
        recreate_database(name, drop_only=True)


# -------------------------------------------------------------------------- settings


def manifest_env(docs: list[dict]) -> dict[str, str]:
    """What a pod's environment holds: the ConfigMap, the Secret example with its placeholders
    filled, and the container's own env."""
    filled = {
        key: re.sub(r"<[^>]*>", lambda _: secrets.token_urlsafe(32), value)
        for key, value in secret_example()["stringData"].items()
    }
    own = {e["name"]: e["value"] for e in the_container(api_pod(docs)).get("env", [])}
    return {**config_map(docs)["data"], **filled, **own}


def test_every_environment_name_is_a_setting_or_read_by_gunicorn_conf(docs):
    known = set(setting_names()) | gunicorn_env_names()
    assert {"WEB_CONCURRENCY", "PROMETHEUS_MULTIPROC_DIR"} <= gunicorn_env_names()
    names = set(config_map(docs)["data"]) | set(secret_example()["stringData"])
    for _, template in pod_templates(docs):
        for container in template["spec"]["containers"]:
            names |= {e["name"] for e in container.get("env", [])}
    commented = set(
        re.findall(r"^\s*#\s*([A-Z][A-Z0-9_]+):", (K8S / "secret.example.yaml").read_text(), re.M)
    )
    assert commented and names | commented <= known, sorted((names | commented) - known)


def test_the_manifests_settings_start_production_behind_a_transaction_pooler(docs):
    settings = Settings.from_env(manifest_env(docs))
    assert settings.is_production
    assert settings.database_prepare_threshold is None  # PgBouncer in transaction mode
    assert settings.direct_dsn != settings.dsn  # workers and migrations bypass it
    assert settings.trusted_proxies == 1 and settings.trusted_proxy_networks


def test_no_secret_value_is_in_the_repository(docs):
    assert not of_kind(docs, "Secret")
    assert not set(config_map(docs)["data"]) & SECRET_SETTINGS
    # every pod reads the Secret the example describes, by its name
    example = secret_example()
    for name, template in pod_templates(docs):
        refs = [
            e["secretRef"]["name"] for e in the_container(template)["envFrom"] if "secretRef" in e
        ]
        assert refs == [example["metadata"]["name"]], name
    # the example holds placeholders only, and no kustomization includes it
    for key, value in example["stringData"].items():
        assert key in SECRET_SETTINGS, key
        assert re.search(r"<[^>]+>", value), key
    for kustomization in K8S.rglob("kustomization.yaml"):
        # what kustomize reads (the comments may mention the file)
        assert "secret.example" not in repr(yaml.safe_load(kustomization.read_text()))
    assert set(example["stringData"]) >= {"SECRET_KEY", "DATABASE_URL", "REDIS_URL"}
