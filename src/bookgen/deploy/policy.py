"""What every pod we ship must be: restricted Pod Security, bounded, probed, and ours alone.

The restricted profile as the API server enforces it (kubernetes.io/docs/concepts/security/
pod-security-standards): non-root, no privilege escalation, every capability dropped (only
NET_BIND_SERVICE may come back), seccomp RuntimeDefault or Localhost, no host namespaces, ports
or paths, only the allowed volume types. On top of it, our own rules: a read-only root
filesystem, CPU and memory requests and a memory limit, readiness and liveness probes on
long-running containers, and no monitoring server (Prometheus, Alertmanager, Grafana) inside an
app pod: those are the cluster's.
"""

from __future__ import annotations

from typing import Any

from bookgen.deploy.manifests import name_of, pod_spec

ALLOWED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
MONITORING_IMAGES = ("prometheus", "alertmanager", "grafana")
# Exporters carry these words in their image names and belong beside the app.
EXPORTER_MARKS = ("exporter",)


def _seccomp_ok(context: dict[str, Any] | None) -> bool | None:
    profile = (context or {}).get("seccompProfile")
    if profile is None:
        return None
    return profile.get("type") in ("RuntimeDefault", "Localhost")


def _monitoring_server(image: str) -> bool:
    repo = image.rsplit("/", 1)[-1].split(":", 1)[0].split("@", 1)[0].lower()
    if any(mark in repo for mark in EXPORTER_MARKS):
        return False
    return any(name in repo for name in MONITORING_IMAGES)


def pod_violations(where: str, pod: dict[str, Any], *, long_running: bool) -> list[str]:
    out: list[str] = []
    security = pod.get("securityContext") or {}
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            out.append(f"{where}: {field} is set")
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            out.append(f"{where}: volume {volume['name']} is {sorted(kinds)}")
    containers = [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]
    if not containers:
        out.append(f"{where}: no containers")
    for c in containers:
        at = f"{where} container {c.get('name')}"
        context = c.get("securityContext") or {}
        image = str(c.get("image", ""))
        if _monitoring_server(image):
            out.append(f"{at}: runs {image}; Prometheus, Alertmanager, Grafana are the cluster's")
        if ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"):
            out.append(f"{at}: image {image!r} is not pinned to a version")
        if not context.get("runAsNonRoot", security.get("runAsNonRoot")):
            out.append(f"{at}: runAsNonRoot is not true")
        if context.get("runAsUser", security.get("runAsUser")) == 0:
            out.append(f"{at}: runs as user 0")
        if context.get("privileged"):
            out.append(f"{at}: privileged")
        if context.get("allowPrivilegeEscalation") is not False:
            out.append(f"{at}: allowPrivilegeEscalation is not false")
        capabilities = context.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            out.append(f"{at}: capabilities do not drop ALL")
        if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            out.append(f"{at}: adds capabilities {capabilities['add']}")
        seccomp = _seccomp_ok(context)
        if seccomp is None:
            seccomp = _seccomp_ok(security)
        if not seccomp:
            out.append(f"{at}: seccompProfile is not RuntimeDefault")
        if not context.get("readOnlyRootFilesystem"):
            out.append(f"{at}: root filesystem is writable")
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                out.append(f"{at}: hostPort {port['hostPort']}")
        resources = c.get("resources") or {}
        requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
        if not {"cpu", "memory"} <= set(requests):
            out.append(f"{at}: no cpu and memory requests")
        if "memory" not in limits:
            out.append(f"{at}: no memory limit")
        if long_running and c in (pod.get("containers") or []):
            for probe in ("readinessProbe", "livenessProbe"):
                if probe not in c:
                    out.append(f"{at}: no {probe}")
    return out


def violations(objects: list[dict[str, Any]]) -> list[str]:
    """Every breach of the rules above in a built overlay; empty when all pods comply."""
    out: list[str] = []
    for obj in objects:
        pod = pod_spec(obj)
        if pod is None:
            continue
        long_running = obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet")
        out += pod_violations(name_of(obj), pod, long_running=long_running)
    namespaces = [o for o in objects if o.get("kind") == "Namespace"]
    for ns in namespaces:
        labels = ns.get("metadata", {}).get("labels") or {}
        if labels.get("pod-security.kubernetes.io/enforce") != "restricted":
            out.append(f"{name_of(ns)}: does not enforce the restricted Pod Security Standard")
    return out
