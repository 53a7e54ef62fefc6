"""The soak's verdicts as a Markdown table, for the terminal and for the bench's report."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loadtests.soak import verdict

MIB = 2**20
OUTCOME = {True: "pass", False: "**FAIL**", None: "not judged"}


def _value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "MiB":
        return f"{value / MIB:.1f} MiB"
    return f"{value:g}"


# The rules judged once the churn is over, as the table names them.
AFTER_THE_CHURN = {"baseline": "back to the baseline", "none": "none left after the churn"}


def table(result: Mapping[str, Any]) -> str:
    """One row per resource: its rule, the two figures compared, what was allowed, the outcome."""
    rows = [
        "| resource | rule | compared | allowed | verdict |",
        "| --- | --- | --- | --- | --- |",
    ]
    for found in result.get("verdicts", []):
        resource = verdict.BY_KEY.get(found["resource"])
        if resource is None:
            continue
        unit = resource.unit
        if found["rule"] == "growth":
            rule = "growth ≤ 5 % after the warm-up"
            compared = f"{_value(found['baseline'], unit)} → {_value(found['end'], unit)}"
        elif found["rule"] == "bounded":
            rule = "under its peak before the warm-up's end, to the churn's end"
            compared = f"{_value(found['baseline'], unit)} peak, {_value(found['end'], unit)} at the end"
        else:
            rule = AFTER_THE_CHURN.get(found["rule"], "shown only")
            compared = f"{_value(found['baseline'], unit)} before, {_value(found['end'], unit)} after"
        rows.append(
            f"| {resource.label} | {rule} | {compared} | {_value(found['allowed'], unit)} "
            f"| {OUTCOME[found['passed']]} |"
        )
    return "\n".join(rows)


def headline(result: Mapping[str, Any]) -> str:
    if result.get("status") != "complete":
        return "interrupted: no verdict"
    passed = result.get("passed")
    failed = [v["resource"] for v in result.get("verdicts", []) if v["passed"] is False]
    if passed is None:
        return "nothing could be judged (see the table)"
    return "pass" if passed else f"FAIL ({', '.join(failed)})"
