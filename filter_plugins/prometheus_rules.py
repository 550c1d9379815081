# Copyright: the archibald-ops authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Alert rule overrides for the prometheus role.

The rule files under roles/prometheus/files/rules/ are the source of truth and
are unit-tested with ``promtool test rules``. An inventory may change a few
fields of a named alert (``for``, ``expr``, ``labels``, ``annotations``,
``keep_firing_for``) without copying the file, for example to shorten the
waiting time of a test host. Documentation: ``prometheus_rule_overrides.yml``
beside this file.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

from ansible.errors import AnsibleFilterError

OVERRIDABLE = ("for", "expr", "labels", "annotations", "keep_firing_for")


def _alerts(rules: Any) -> list[dict[str, Any]]:
    """Every alerting rule of a parsed rule file (a dict with ``groups``)."""
    if not isinstance(rules, Mapping) or not isinstance(rules.get("groups"), list):
        raise AnsibleFilterError(
            "a rule file must be a mapping with a 'groups' list (Prometheus rule file format)"
        )
    found = []
    for group in rules["groups"]:
        for rule in group.get("rules") or []:
            if isinstance(rule, dict) and "alert" in rule:
                found.append(rule)
    return found


def _check_overrides(overrides: Any) -> Mapping[str, Mapping[str, Any]]:
    if overrides is None:
        return {}
    if not isinstance(overrides, Mapping):
        raise AnsibleFilterError(
            "prometheus_alert_overrides must map alert names to fields, "
            f"e.g. {{AppHighErrorRate: {{for: 1m}}}}; got {type(overrides).__name__}"
        )
    for name, fields in overrides.items():
        if not isinstance(fields, Mapping) or not fields:
            raise AnsibleFilterError(
                f"prometheus_alert_overrides.{name} must be a non-empty mapping of fields"
            )
        unknown = sorted(set(fields) - set(OVERRIDABLE))
        if unknown:
            raise AnsibleFilterError(
                f"prometheus_alert_overrides.{name}: {', '.join(unknown)} cannot be overridden; "
                f"allowed: {', '.join(OVERRIDABLE)}"
            )
    return overrides


def prometheus_rule_overrides(rules: Any, overrides: Any) -> dict[str, Any]:
    """Return a copy of a parsed rule file with the overrides of its alerts applied.

    Overrides naming alerts that are not in this file are ignored here (another
    file may hold them); use ``prometheus_alert_names`` to check for typos.
    """
    checked = _check_overrides(overrides)
    patched = copy.deepcopy(rules)
    for rule in _alerts(patched):
        fields = checked.get(rule["alert"])
        if fields:
            rule.update(copy.deepcopy(dict(fields)))
    return patched  # type: ignore[no-any-return]


def prometheus_alert_names(rules: Any) -> list[str]:
    """The alert names of a parsed rule file, in file order."""
    return [str(rule["alert"]) for rule in _alerts(rules)]


class FilterModule:
    """Alert rule filters of the prometheus role."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {
            "prometheus_rule_overrides": prometheus_rule_overrides,
            "prometheus_alert_names": prometheus_alert_names,
        }
