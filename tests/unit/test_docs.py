"""The documentation keeps up with the code: every configuration key, every alert."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml

from streaming_jobs.common.settings import PROJECT_ROOT

DOCS = PROJECT_ROOT / "docs"


def leaves(data: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in data.items():
        if isinstance(value, dict) and key != "weights":
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def shown(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}"
    return str(value)


def test_every_shipped_key_is_in_the_configuration_reference_with_its_value() -> None:
    reference = (DOCS / "CONFIG.md").read_text()
    rows = {
        line.split("|")[1].strip().strip("`"): line.split("|")[2].strip().strip("`")
        for line in reference.splitlines()
        if line.startswith("| `")
    }
    missing, wrong = [], []
    for name in ("pipeline", "portfolio"):
        shipped = yaml.safe_load((PROJECT_ROOT / "conf" / f"{name}.yaml").read_text())
        for key, value in leaves(shipped):
            if key not in rows:
                missing.append(f"{name}.yaml: {key}")
            elif rows[key] != shown(value):
                wrong.append(
                    f"{name}.yaml: {key} documented {rows[key]!r}, shipped {shown(value)!r}"
                )
    symbols = yaml.safe_load((PROJECT_ROOT / "conf" / "symbols.yaml").read_text())
    if rows.get("defaults.streams") != shown(symbols["defaults"]["streams"]):
        wrong.append("symbols.yaml: defaults.streams")
    assert not missing and not wrong, missing + wrong


def test_every_alert_has_a_runbook_section() -> None:
    rules = yaml.safe_load((PROJECT_ROOT / "infra" / "prometheus" / "alerts.yml").read_text())
    operations = (DOCS / "OPERATIONS.md").read_text()
    anchors = {
        "#" + line.lstrip("#").strip().lower().replace(" ", "-")
        for line in operations.splitlines()
        if line.startswith("### ")
    }
    for group in rules["groups"]:
        for rule in group["rules"]:
            runbook = rule["annotations"]["runbook"]
            assert runbook.startswith("docs/OPERATIONS.md#"), rule["alert"]
            assert runbook.removeprefix("docs/OPERATIONS.md") in anchors, rule["alert"]
            assert rule["alert"] in operations, rule["alert"]
