"""The comparison card: one self-contained HTML page (metrics per set, lineage, decision) kept in a challenger's run.

MLflow's artifact viewer renders `.html` artifacts in place, so the card is read where the run is read. A card says
where the versions' aliases point and whether the challenger was rolled back: `refresh_cards` rewrites the cards of
the versions an alias move touched, so neither goes stale.
"""

from __future__ import annotations

from html import escape
from typing import Any

from prefix_registry.registry.comparison import TAG_COMPARED_WITH, VersionComparison, compare_versions
from prefix_registry.registry.store import AliasChange, PrefixRegistry

CARD_FOLDER = "comparison"
STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em}"
    "td,th{border:1px solid #ccc;padding:.3em .7em;text-align:left}"
    "th{background:#f3f3f3}.win{color:#17702e;font-weight:600}.loss{color:#a4161a;font-weight:600}"
    ".note{color:#666}"
)


def card_path(comparison: VersionComparison) -> str:
    return f"{CARD_FOLDER}/v{comparison.a.version}-vs-v{comparison.b.version}.html"


def write_card(registry: PrefixRegistry, task: str, champion: str, challenger: str) -> VersionComparison:
    """Compare `challenger` with the `champion` it was judged against and (re)write its card in its run."""
    comparison = compare_versions(registry, task, champion, challenger)
    registry.log_run_text(comparison.b.run_id, render_card(comparison), card_path(comparison))
    return comparison


def refresh_cards(registry: PrefixRegistry, change: AliasChange) -> None:
    """Rewrite the card of each version `change` moved an alias off or onto that a retrain judged (has one)."""
    for number in dict.fromkeys(v for v in (change.from_version, change.to_version) if v is not None):
        version = registry.version(change.task, number)
        champion = version.tags.get(TAG_COMPARED_WITH)
        if champion:
            write_card(registry, change.task, champion, version.version)


def render_card(comparison: VersionComparison) -> str:
    """The card's HTML: a heading, the decision, scores per evaluation set, then each version's lineage."""
    a, b = comparison.a.version, comparison.b.version
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(comparison.task)}: v{a} vs v{b}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>{escape(comparison.task)}: v{a} vs v{b}</h1>",
        _decision(comparison.decision),
        "<h2>Scores per evaluation set</h2>",
        _scores(comparison),
        "<h2>Lineage</h2>",
        _lineage(comparison.lineage),
        "</body></html>",
    ]
    return "\n".join(parts)


def _decision(decision: dict[str, Any] | None) -> str:
    if decision is None:
        return "<p class='note'>Neither version was judged against the other by a retrain.</p>"
    verdict = escape(str(decision.get("decision") or "undecided"))
    text = (
        f"<p><b>Decision:</b> v{escape(decision['challenger'])} against champion v{escape(decision['champion'])}: "
        f"<b>{verdict}</b>. {escape(str(decision.get('reason') or ''))}</p>"
    )
    if decision.get("rolled_back"):
        rolled_back = escape(decision["rolled_back"])
        text += f"<p class='loss'>v{escape(decision['challenger'])} was rolled back ({rolled_back}).</p>"
    return text


def _scores(comparison: VersionComparison) -> str:
    a, b = comparison.a.version, comparison.b.version
    rows = [f"<tr><th>set</th><th>dataset</th><th>metric</th><th>v{a}</th><th>v{b}</th><th>v{b} − v{a}</th></tr>"]
    for row in comparison.rows:
        dataset = row.dataset_a if row.same_set else f"{row.dataset_a or '-'} / {row.dataset_b or '-'}"
        change = row.change
        css = "" if change is None else (" class='win'" if change > 0 else " class='loss'" if change < 0 else "")
        shown = "not the same set" if not row.same_set else _fmt(change, sign=True)
        rows.append(
            f"<tr><td>{escape(row.set)}</td><td>{escape(str(dataset))}</td><td>{escape(row.metric)}</td>"
            f"<td>{_fmt(row.a)}</td><td>{_fmt(row.b)}</td>"
            f"<td{css}>{shown}</td></tr>"
        )
    return "<table>" + "".join(rows) + "</table>"


def _lineage(lineage: dict[str, dict[str, Any]]) -> str:
    versions = list(lineage)
    keys = list(next(iter(lineage.values()), {}))
    header = "<tr><th></th>" + "".join(f"<th>v{escape(v)}</th>" for v in versions) + "</tr>"
    body = "".join(
        f"<tr><th>{escape(key)}</th>"
        + "".join(f"<td>{escape(_text(lineage[v].get(key)))}</td>" for v in versions)
        + "</tr>"
        for key in keys
    )
    return f"<table>{header}{body}</table>"


def _fmt(value: float | None, sign: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.3f}" if sign else f"{value:.3f}"


def _text(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "-"
    return str(value)
