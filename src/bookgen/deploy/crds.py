"""Custom kinds checked against the published CRD models (PyPI cloudcoil-models-*).

The models are pydantic classes generated from the operators' own CRDs. Pydantic ignores
unknown keys, so strictness is added the way `kubernetes-validate --strict` has it: every key
of the manifest must survive a round trip through the model (a misspelt field does not).
"""

from __future__ import annotations

from typing import Any

from bookgen.deploy.manifests import CUSTOM_KINDS, name_of


def _models() -> dict[tuple[str, str], Any]:
    from cloudcoil.models.keda import v1alpha1 as keda
    from cloudcoil.models.prometheus_operator import v1, v1alpha1

    return {
        ("monitoring.coreos.com/v1", "PrometheusRule"): v1.PrometheusRule,
        ("monitoring.coreos.com/v1", "ServiceMonitor"): v1.ServiceMonitor,
        ("monitoring.coreos.com/v1", "PodMonitor"): v1.PodMonitor,
        ("monitoring.coreos.com/v1alpha1", "AlertmanagerConfig"): v1alpha1.AlertmanagerConfig,
        ("keda.sh/v1alpha1", "ScaledObject"): keda.ScaledObject,
    }


def _lost_keys(given: Any, kept: Any, path: str) -> list[str]:
    if isinstance(given, dict):
        if not isinstance(kept, dict):
            return [path or "."]
        out = []
        for key, value in given.items():
            if key not in kept:
                out.append(f"{path}.{key}")
            else:
                out += _lost_keys(value, kept[key], f"{path}.{key}")
        return out
    if isinstance(given, list):
        if not isinstance(kept, list) or len(given) != len(kept):
            return [path]
        return [
            lost
            for i, pair in enumerate(zip(given, kept, strict=True))
            for lost in _lost_keys(*pair, f"{path}[{i}]")
        ]
    return []


def problems(objects: list[dict[str, Any]]) -> tuple[int, list[str]]:
    """(custom objects checked, problems found)."""
    from pydantic import ValidationError

    models = _models()
    checked, out = 0, []
    for obj in objects:
        if obj.get("kind") not in CUSTOM_KINDS:
            continue
        model = models.get((obj.get("apiVersion", ""), obj["kind"]))
        if model is None:
            out.append(f"{name_of(obj)}: no published model for {obj.get('apiVersion')}")
            continue
        checked += 1
        try:
            parsed = model.model_validate(obj)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            out.append(f"{name_of(obj)}: {where}: {first['msg']}")
            continue
        kept = parsed.model_dump(by_alias=True, exclude_unset=True, mode="json")
        out += [f"{name_of(obj)}: unknown field {lost}" for lost in _lost_keys(obj, kept, "")]
    return checked, out
