"""Every module's DOCUMENTATION matches its argument spec, and its docs parse."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import pytest
import yaml

MODULES = [
    "bluegreen_facts",
    "bluegreen_state",
    "bluegreen_switch",
    "health_gate",
    "prometheus_gate",
    "release_lock",
]
COMPARED = ("type", "elements", "default", "choices", "required", "aliases")


def load(name: str) -> ModuleType:
    return importlib.import_module(name)


def compare(documented: dict[str, Any], spec: dict[str, Any], where: str) -> list[str]:
    problems = []
    if set(documented) != set(spec):
        problems.append(f"{where}: documented {sorted(documented)} but spec has {sorted(spec)}")
    for option in set(documented) & set(spec):
        doc, arg = documented[option], spec[option]
        for key in COMPARED:
            doc_value = doc.get(key, False if key == "required" else None)
            arg_value = arg.get(key, False if key == "required" else None)
            if key == "type":
                doc_value, arg_value = doc_value or "str", arg_value or "str"
            if doc_value != arg_value:
                problems.append(f"{where}.{option}.{key}: doc {doc_value!r} != spec {arg_value!r}")
        if "options" in arg or "suboptions" in doc:
            problems += compare(
                doc.get("suboptions", {}), arg.get("options", {}), f"{where}.{option}"
            )
    return problems


@pytest.mark.parametrize("name", MODULES)
def test_documentation_matches_argument_spec(name: str) -> None:
    module = load(name)
    doc = yaml.safe_load(module.DOCUMENTATION)
    assert doc["module"] == name
    assert compare(doc["options"], module.ARGUMENT_SPEC, name) == []


@pytest.mark.parametrize("name", MODULES)
def test_attributes_examples_and_return_are_documented(name: str) -> None:
    module = load(name)
    doc = yaml.safe_load(module.DOCUMENTATION)
    assert set(doc["attributes"]) == {"check_mode", "diff_mode"}
    assert doc["attributes"]["check_mode"]["support"] == "full"
    examples = yaml.safe_load(module.EXAMPLES)
    assert any(name in task for task in examples)
    assert isinstance(yaml.safe_load(module.RETURN), dict)
