"""Reading deploy/: YAML as Kubernetes reads it, and each kustomize overlay built."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

KUBERNETES_DIR = "deploy/kubernetes"
OVERLAYS = ("dev", "prod")
COMPOSE_FILES = ("deploy/compose/compose.yaml", "deploy/compose/compose.observability.yaml")
# Kinds whose schemas come from their CRDs, not from Kubernetes itself.
CUSTOM_KINDS = (
    "PrometheusRule",
    "ServiceMonitor",
    "PodMonitor",
    "AlertmanagerConfig",
    "ScaledObject",
)
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")


class ToolMissing(RuntimeError):
    """A validator binary is not installed."""


class _Loader(yaml.SafeLoader):
    """YAML 1.1 without its `=` "value" type: kubectl prints `matchType: =` unquoted, and Go's
    YAML reads that as the string it is."""


_Loader.yaml_implicit_resolvers = {
    first: [r for r in resolvers if r[0] != "tag:yaml.org,2002:value"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_all(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.load_all(text, Loader=_Loader) if doc]


def tool(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ToolMissing(f"{name} is not installed ({hint})")
    return path


def kustomize(root: Path, overlay: str) -> list[dict[str, Any]]:
    """The overlay's objects, as `kubectl apply -k` would send them."""
    kubectl = tool("kubectl", "kubectl kustomize builds the overlays")
    target = root / KUBERNETES_DIR / "overlays" / overlay
    done = subprocess.run(
        [kubectl, "kustomize", str(target)], capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {target}: {done.stderr.strip()}")
    return load_all(done.stdout)


def pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The pod template's spec of a workload, or None for other kinds."""
    if obj.get("kind") not in WORKLOAD_KINDS:
        return None
    spec = obj["spec"]
    if obj["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    pod: dict[str, Any] = spec["template"]["spec"]
    return pod


def name_of(obj: dict[str, Any]) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
