"""Deterministic YAML and JSON text for generated files, each starting with the header."""

from __future__ import annotations

import json
from typing import Any

import yaml

from bookgen.slo.conventions import HEADER


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump_yaml(data: Any, *, header: str = HEADER, sort_keys: bool = False) -> str:
    body = yaml.dump(
        data,
        Dumper=_Dumper,
        sort_keys=sort_keys,
        width=100,
        allow_unicode=True,
        default_flow_style=False,
    )
    return f"# {header}\n{body}"


def dump_json(data: dict[str, Any]) -> str:
    return json.dumps({"_comment": HEADER, **data}, indent=2, sort_keys=True) + "\n"
