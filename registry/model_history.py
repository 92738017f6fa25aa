"""The registered model's description: a short intro, then the alias history as a markdown table.

The MLflow UI shows a registered model's description at the top of its page, rendered as markdown, so the story of
the champion (every promotion and rollback: when, from, to, who, why) is where people look first. The table is
rebuilt from the alias-history tags (aliases.py) after every move; the text above it is kept as it is.
"""

from __future__ import annotations

from collections.abc import Sequence

from prefix_registry.registry.aliases import CHALLENGER, CHAMPION, AliasEvent

HISTORY_HEADING = "### Alias history"
MAX_REASON = 160


def history_markdown(history: Sequence[AliasEvent], aliases: dict[str, str]) -> str:
    """The alias-history section: where each alias points now, then every move, newest first."""
    current = ", ".join(f"**{alias}** → v{version}" for alias, version in sorted(aliases.items())) or "none set"
    champion = aliases.get(CHAMPION)
    lines = [
        HISTORY_HEADING,
        "",
        f"Champion now: **v{champion}**." if champion else "No champion yet.",
        f"Aliases: {current}.",
        *_rollout_line(history),
        "",
        "| time (UTC) | alias | move | from | to | who | why |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for event in reversed(history):
        reason = " ".join((event.reason or "").split())
        if len(reason) > MAX_REASON:
            reason = reason[: MAX_REASON - 1] + "…"
        cells = [
            event.at.replace("T", " ").removesuffix("+00:00"),
            event.alias,
            event.action,
            f"v{event.from_version}" if event.from_version else "-",
            f"v{event.to_version}",
            event.actor,
            reason or "-",
        ]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


def with_history(description: str, history: Sequence[AliasEvent], aliases: dict[str, str]) -> str:
    """`description` whose alias-history section (if any) is replaced by the current one."""
    intro = description.split(HISTORY_HEADING, 1)[0].rstrip()
    return f"{intro}\n\n{history_markdown(history, aliases)}".strip()


# The alias-history actions of rollouts (registry/rollouts.py's RolloutAction values; that module imports this one's
# callers, so the words are repeated here rather than imported).
_ROLLOUT_START = "rollout-start"
_ROLLOUT_ENDS = {
    "rollout-stop": "stopped by hand",
    "rollout-rollback": "rolled back by the judge",
    "rollout-promote": "promoted by the judge",
}


def _rollout_line(history: Sequence[AliasEvent]) -> list[str]:
    """One line on the task's rollout, when it ever had one: running now, or how the last one ended."""
    last = next(
        (
            e
            for e in reversed(history)
            if e.alias == CHALLENGER and (e.action == _ROLLOUT_START or e.action in _ROLLOUT_ENDS)
        ),
        None,
    )
    if last is None:
        return []
    when = last.at.replace("T", " ").removesuffix("+00:00")
    if last.action == _ROLLOUT_START:
        return [f"Rollout now: **v{last.to_version}** ({last.reason}), started {when} UTC by {last.actor}."]
    return [f"Last rollout: v{last.to_version} {_ROLLOUT_ENDS[last.action]} at {when} UTC."]
