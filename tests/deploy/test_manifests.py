"""deploy/: Kubernetes manifests against the Kubernetes OpenAPI schemas
(kubernetes-validate, strict: an unknown field fails), the compose file
against the Compose Specification schema (as vendored by check-jsonschema),
and what the issue asks of each checked by reading them. No Docker engine
or cluster runs here."""

from __future__ import annotations

import importlib.resources
import json
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from cds.api.auth import TrustedClients
from cds.knowledge import load_ruleset

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
K8S_VERSION = "1.30.0"


def documents() -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        out.extend((path, doc) for doc in yaml.safe_load_all(path.read_text()) if doc)
    return out


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in documents() if doc["kind"] == kind]


@pytest.mark.parametrize("path,doc", documents(), ids=lambda v: v.name if isinstance(v, Path) else v.get("kind"))
def test_every_manifest_is_valid_kubernetes(path: Path, doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_validator_refuses_what_kubernetes_would() -> None:
    deployment = by_kind("Deployment")[0]
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_every_kind_the_issue_asks_for_is_there() -> None:
    kinds = {doc["kind"] for _, doc in documents()}
    assert {"Deployment", "Service", "ConfigMap", "Secret", "HorizontalPodAutoscaler",
            "PodDisruptionBudget", "Job"} <= kinds


def test_the_deployment_is_probed_limited_and_locked_down() -> None:
    deployment = by_kind("Deployment")[0]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    limits = container["resources"]["limits"]
    assert "cpu" in limits and "memory" in limits and container["resources"]["requests"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    env = {e["name"]: e for e in container["env"]}
    assert env["CDS_AUTH"]["value"] == "on", "off-loopback the service must authenticate"
    assert env["CDS_AUDIT_MIGRATE"]["value"] == "0", "migrations run in the Job, not in every pod"
    assert "secretKeyRef" in env["CDS_DATABASE_URL"]["valueFrom"]
    # every writable path is a volume (the root filesystem is read-only)
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/tmp" in mounts and env["PROMETHEUS_MULTIPROC_DIR"]["value"].startswith("/tmp/")
    assert env["CDS_WORKERS"]["value"] == limits["cpu"], "one worker per CPU of the limit (docs/operations.md)"


def test_selectors_match_the_pods() -> None:
    labels = by_kind("Deployment")[0]["spec"]["template"]["metadata"]["labels"]
    for doc in by_kind("Service"):
        assert doc["spec"]["selector"].items() <= labels.items()
    for doc in by_kind("PodDisruptionBudget"):
        assert doc["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = by_kind("HorizontalPodAutoscaler")[0]
    assert hpa["spec"]["scaleTargetRef"]["name"] == by_kind("Deployment")[0]["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2 and by_kind("PodDisruptionBudget")[0]["spec"]["minAvailable"] >= 1


def test_the_ruleset_configmap_is_a_loadable_ruleset_laid_out_by_the_deployment(tmp_path: Path) -> None:
    configmap = next(d for d in by_kind("ConfigMap") if d["metadata"]["name"].startswith("cds-ruleset-"))
    volume = next(v for v in by_kind("Deployment")[0]["spec"]["template"]["spec"]["volumes"] if v["name"] == "ruleset")
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    items = volume["configMap"]["items"]
    assert sorted(i["key"] for i in items) == sorted(configmap["data"])
    for item in items:
        target = tmp_path / item["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(configmap["data"][item["key"]])
    ruleset = load_ruleset(tmp_path)
    annotations = configmap["metadata"]["annotations"]
    assert annotations["cds/ruleset-sha256"] == ruleset.sha256
    assert configmap["metadata"]["name"] == f"cds-ruleset-{ruleset.sha256[:10]}"


def test_the_configmap_generator_writes_what_is_committed_for_its_ruleset(tmp_path: Path) -> None:
    """Regenerating from the ConfigMap's own files gives the committed file
    (so deploy/k8s/ruleset_configmap.py is the way to make it)."""
    import subprocess

    configmap = next(d for d in by_kind("ConfigMap") if d["metadata"]["name"].startswith("cds-ruleset-"))
    for key, content in configmap["data"].items():
        target = tmp_path / key.replace("__", "/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    out = subprocess.run([sys.executable, str(K8S / "ruleset_configmap.py"), str(tmp_path)], capture_output=True,
                         text=True, check=True, cwd=ROOT)
    assert out.stdout == (K8S / "configmap-ruleset.yaml").read_text()


def test_the_trusted_clients_placeholder_is_a_valid_file(tmp_path: Path) -> None:
    secret = next(d for d in by_kind("Secret") if d["metadata"]["name"] == "cds-trusted-clients")
    path = tmp_path / "trusted-clients.json"
    path.write_text(secret["stringData"]["trusted-clients.json"])
    clients = TrustedClients.load(path)
    assert clients is not None


def compose_schema() -> dict[str, Any]:
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads(vendor.joinpath("compose-spec.json").read_text())


def test_the_compose_file_is_valid_compose() -> None:
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    doc = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert [e.message for e in validator.iter_errors(doc)] == []
    doc["services"]["cds"]["helthcheck"] = {}
    assert any("helthcheck" in e.message for e in validator.iter_errors(doc)), "the schema must refuse typos"


def test_compose_migrates_before_the_service_starts_and_keeps_postgres() -> None:
    doc = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = doc["services"]
    assert services["cds"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "cds db upgrade" in " ".join(services["migrate"]["command"])
    assert services["postgres"]["image"].startswith("postgres:") and "audit-data" in doc["volumes"]
    assert services["cds"]["environment"]["CDS_AUDIT_MIGRATE"] == "0"
    assert services["cds"]["read_only"] is True and services["cds"]["cap_drop"] == ["ALL"]
    assert all(port.startswith("127.0.0.1:") for port in services["cds"]["ports"])


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, rest = line.partition(" ")
            out.append((instruction.upper(), rest.strip()))
    return out


def test_the_dockerfile_is_multi_stage_pinned_non_root_and_health_checked() -> None:
    steps = dockerfile()
    args = dict(rest.split("=", 1) for op, rest in steps if op == "ARG" and "=" in rest)
    stages = [rest for op, rest in steps if op == "FROM"]
    assert len(stages) >= 2, "multi-stage"
    base = args["PYTHON_IMAGE"]
    name, _, tag = base.partition(":")
    assert name == "python" and tag.count(".") == 2 and tag.split("-")[0].startswith("3.11."), \
        f"base pinned to an exact Python release: {base}"
    assert "bookworm" in tag, "and to a Debian release"
    final = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    tail = steps[final:]
    users = [rest for op, rest in tail if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert any(op == "HEALTHCHECK" and "/healthz" in rest for op, rest in tail)
    assert not any(op == "RUN" and "build-essential" in rest for op, rest in tail), "no compiler in the image"
    cmd = next(rest for op, rest in reversed(tail) if op == "CMD")
    assert json.loads(cmd)[0] == "gunicorn"
    copied = " ".join(rest for op, rest in tail if op == "COPY")
    assert "rulesets" in copied and "gunicorn.conf.py" in copied
