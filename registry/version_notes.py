"""Markdown descriptions of a version, as the MLflow UI renders them on the version page.

A description is built in sections, each added when its event happens:

    origin    (at registration)  why the version exists: trigger, drift summary linked to its monitoring run, lineage
    decision  (after a retrain)  what it was compared with, on which sets, and what was decided
    rollback  (on a rollback)    that it was rolled back, when, by whom, to which version
    promoted again (on a later promotion to that alias)  replaces the rollback section: it serves again

Links are relative to the tracking UI (`#/experiments/<id>/runs/<run_id>`), so they work wherever it is served.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

DECISION_HEADING = "### Decision"
ROLLBACK_HEADING = "### Rolled back"
REPROMOTED_HEADING = "### Promoted again"


@dataclass(frozen=True)
class Origin:
    """What a version's first section says: where it came from and how it scored on its own split."""

    trigger: str
    trigger_summary: str | None
    trigger_link: str | None
    parent: str | None
    warm_start: bool
    method: str
    virtual_tokens: int
    base: str
    data: str
    rows: int
    own_test: str
    baseline: str | None


def run_link(experiment_id: str, run_id: str, text: str | None = None) -> str:
    """A markdown link to a run's page in the MLflow UI, relative to the UI's own address."""
    return f"[{text or 'run ' + run_id[:8]}](#/experiments/{experiment_id}/runs/{run_id})"


def artifact_link(experiment_id: str, run_id: str, path: str) -> str:
    """A markdown link to one artifact of a run in the MLflow UI (its Artifacts tab opened on `path`)."""
    return f"[{path}](#/experiments/{experiment_id}/runs/{run_id}/artifacts/{path})"


def origin_headline(origin: Origin) -> str:
    """The description's first line, plain text: the MLflow UI's versions table shows it as it is, unrendered."""
    trained = f"{origin.method} tuning of {origin.base} on {origin.rows} rows"
    if origin.parent:
        start = "warm start" if origin.warm_start else "trained anew"
        return f"Retrained from v{origin.parent} ({start}, trigger {origin.trigger}): {trained}."
    return f"Trained from scratch (trigger {origin.trigger}): {trained}."


def origin_markdown(origin: Origin) -> str:
    """A one-line plain headline, then why the version exists and its lineage and scores, rendered."""
    why = f"**Why this version exists:** trigger `{origin.trigger}`"
    if origin.trigger_summary:
        why += f": {origin.trigger_summary}"
    if origin.trigger_link:
        why += f" ({origin.trigger_link})"
    lineage = (
        f"v{origin.parent} ({'warm start' if origin.warm_start else 'trained anew'})"
        if origin.parent
        else "none (trained from scratch)"
    )
    rows = [
        ("Parent", lineage),
        ("Method", f"{origin.method} tuning, {origin.virtual_tokens} virtual tokens"),
        ("Base", origin.base),
        ("Data", f"{origin.data} ({origin.rows} rows)"),
        ("Own test split", origin.own_test),
    ]
    if origin.baseline:
        rows.append(("Baseline", origin.baseline))
    return f"{origin_headline(origin)}\n\n{why}.\n\n{_table(['', ''], rows)}"


def decision_markdown(
    verdict: str,
    reason: str,
    champion_version: str,
    challenger_version: str,
    rows: Sequence[tuple[str, str, str, str, str]],
    card_link: str | None = None,
) -> str:
    """The decision section: the verdict, the reason, and both versions' scores on the same named sets.

    `rows` are (set, dataset, champion score, challenger score, change); `card_link` a markdown link to the
    comparison card (`artifact_link`); `verdict` the outcome in words (`PROMOTED to champion`, ...)."""
    lines = [
        f"{DECISION_HEADING}: {verdict}",
        "",
        f"Compared with **v{champion_version}** (champion at the time) on the same evaluation sets:",
        "",
        _table(["set", "dataset", f"v{champion_version}", f"v{challenger_version}", "change"], rows),
        "",
        f"Reason: {reason}.",
    ]
    if card_link:
        lines += ["", f"Comparison card: {card_link} (this version's run artifacts)."]
    return "\n".join(lines)


def rollback_markdown(alias: str, at: str, actor: str, reason: str | None, to_version: str) -> str:
    because = f": {reason}" if reason else ""
    serves = "; this version no longer serves" if alias == "champion" else ""
    return (
        f"{ROLLBACK_HEADING}\n\n**This version was rolled back** from {alias} at {at} by {actor}{because}. "
        f"The {alias} returned to v{to_version}{serves}."
    )


def repromotion_markdown(alias: str, at: str, actor: str, reason: str | None) -> str:
    """The section of a version promoted back to the alias it had been taken off (the model's history keeps both)."""
    because = f": {reason}" if reason else ""
    return (
        f"{REPROMOTED_HEADING}\n\n**Promoted to {alias} again** at {at} by {actor}{because}. "
        "Its earlier move off the alias is in the model's alias history."
    )


def with_section(description: str, section: str, heading: str | None = None) -> str:
    """`description` with `section` appended, replacing an earlier section under the same heading."""
    if heading and heading in description:
        description = description[: description.index(heading)].rstrip()
    return f"{description.rstrip()}\n\n{section}".strip()


def without_section(description: str, heading: str) -> str:
    """`description` without the section under `heading` (and anything after it), if it has one."""
    if heading not in description:
        return description
    return description[: description.index(heading)].rstrip()


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(_cell(c) for c in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *(line(r) for r in rows)])


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
