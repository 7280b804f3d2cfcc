"""The check's report as text (for the terminal) and as JSON (``--json``)."""

from __future__ import annotations

import json
import math

_STATUS = {"ok": "OK", "fail": "FAIL", "error": "ERROR", "timeout": "TIMEOUT", "crash": "CRASH"}


def _finding(method: dict) -> list[str]:
    lines = [f"    {method['name']}: {method.get('case', '')}".rstrip(": ")]
    lines.append(f"        {method['message']}")
    if method.get("hint"):
        lines.append(f"        hint: {method['hint']}")
    return lines


def text(report: dict) -> str:
    """The report for a terminal: one line per class, then its failing methods with hints."""
    lines = [f"jaxdl.exercise check {report['directory']} ({report['seconds']:.1f} s)"]
    for entry in report["classes"]:
        status = _STATUS[entry["status"]]
        methods = entry.get("methods", [])
        if entry["status"] == "ok":
            lines.append(f"{entry['name']:20s}{status:9s}{', '.join(m['name'] for m in methods)}")
            continue
        lines.append(f"{entry['name']:20s}{status:9s}{entry.get('message', '')}".rstrip())
        for method in methods:
            if method["status"] != "ok":
                lines.extend(_finding(method))
        passed = [m["name"] for m in methods if m["status"] == "ok"]
        if passed:
            lines.append(f"    OK: {', '.join(passed)}")
    if report["not_found"]:
        lines.append(f"not found (not checked): {', '.join(report['not_found'])}")
    counts = {}
    for entry in report["classes"]:
        counts[entry["status"]] = counts.get(entry["status"], 0) + 1
    summary = ", ".join(f"{n} {_STATUS[s]}" for s, n in counts.items())
    lines.append(f"{summary}: {'everything found is OK' if report['ok'] else 'see above'}")
    return "\n".join(lines)


def as_json(report: dict) -> str:
    """The report as JSON (non-finite numbers as the strings "nan", "inf", "-inf")."""
    def finite(value):
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        if isinstance(value, dict):
            return {k: finite(v) for k, v in value.items()}
        if isinstance(value, list):
            return [finite(v) for v in value]
        return value
    return json.dumps(finite(report), indent=1)
