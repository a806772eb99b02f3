"""The generation benchmark's arithmetic: the model's bounds, the ratio, token efficiency."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import yaml

from bookgen.acceptance.generation import book_shape, critical_path, schedule_bound
from bookgen.service.settings import Settings, SimSettings

ROOT = Path(__file__).resolve().parents[2]


def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "bench_generation", ROOT / "scripts" / "benchmark_generation.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_critical_path_is_the_outline_then_the_longest_section() -> None:
    s = Settings()
    outline, sections = book_shape(20, 51_000)
    path = critical_path(s, 20, 51_000, 40.0)
    ttft = s.sim.time_to_first_token_s + s.sim.latency_s
    # The last chapter starts when the outline has streamed, then runs a chapter's length.
    assert abs(path - (2 * ttft + outline / 40.0 + max(sections) / 40.0)) < 1.0
    # Fewer slots than sections can only be slower.
    limited = schedule_bound(
        outline, sections, jobs=1, job_slots=1, chapter_slots=4, llm_slots=4, rate=40.0, ttft=ttft
    )
    assert limited > path


def test_bounds_ratio_and_efficiency() -> None:
    b = bench()
    s = Settings(sim=SimSettings(tokens_per_second=40.0, tpm_limit=60_000, rpm_limit=600))
    use = b.Usage(
        kept_tokens=90_000,
        outline_tokens=1_000,
        input_tokens=29_000,
        generated_tokens=100_000.0,
        requests=60.0,
        refused={"requests": 0.0, "tokens": 3.0, "streams": 0.0},
    )
    bounds = b.quota_bounds(s, use, 100.0, 4)
    assert bounds["tokens per minute"] == 120.0  # 120,000 tokens at 60,000 a minute
    assert bounds["requests per minute"] == 6.0
    assert bounds["critical path"] == 100.0
    goals = b.Goals(1.1, 0.95, 1800.0, 2.0, "test")
    f = b.judge("batch", 130.0, bounds, use, goals, unit_rate=(4, 4))
    assert f.detail["binding_limit"] == "tokens per minute"
    assert abs(f.ratio - 130.0 / 120.0) < 1e-9 and f.unit == "books/h"
    assert f.detail["token_efficiency"] == 0.9 and not f.met  # 0.9 < 0.95
    failed = b.judge("batch", 10.0, bounds, use, goals, unit_rate=(0, 4))
    assert failed.ratio == float("inf") and failed.measured == 0.0 and not failed.met
    planned = b.quota_bounds(s, use, 100.0, 4, planned_completion=200_000)
    assert planned["tokens per minute"] == 229.0  # 29,000 prompt + 200,000 planned tokens
    within = b.judge("book", 125.0, bounds, use, b.Goals(1.1, 0.9, 1800.0, 2.0, "test"))
    assert within.met and abs(within.ratio - 125.0 / 120.0) < 1e-9
    over = b.judge("book", 133.0, bounds, use, b.Goals(1.1, 0.9, 1800.0, 2.0, "test"))
    assert not over.met  # 1.108 > 1.1


def test_goals_come_from_the_spec(tmp_path: Path) -> None:
    spec = yaml.safe_load((ROOT / "slo.yaml").read_text(encoding="utf-8"))
    spec["targets"]["generation_benchmark"] = {"bound_ratio_max": 1.3, "token_efficiency_min": 0.8}
    path = tmp_path / "slo.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    goals = bench().load_goals(path)
    assert (goals.bound_ratio_max, goals.token_efficiency_min) == (1.3, 0.8)
    assert goals.book_time_s == 1800.0 and goals.min_books_per_hour == 2.0
