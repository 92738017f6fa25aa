"""`prefixctl compare TASK A B`: two versions side by side on the same named evaluation sets."""

from __future__ import annotations

from typing import Annotated

import typer

from prefix_registry.cli.app import JsonOption, open_registry
from prefix_registry.cli.output import fmt_metric, print_json, print_table


def compare(
    task: Annotated[str, typer.Argument(help="Task name.")],
    a: Annotated[str, typer.Argument(help="First version: a number (1, v1) or an alias (champion).")],
    b: Annotated[str, typer.Argument(help="Second version: a number or an alias.")],
    as_json: JsonOption = False,
) -> None:
    """Compare versions A and B: scores per evaluation set (change only where both saw the same set), lineage,
    and the retrain decision that judged one against the other."""
    from prefix_registry.registry.comparison import compare_versions

    comparison = compare_versions(open_registry(), task, a, b)
    if as_json:
        print_json(comparison.summary())
        return
    va, vb = comparison.a.version, comparison.b.version
    print_table(
        f"{task}: v{va} vs v{vb}, scores per evaluation set",
        ["set", "dataset", "metric", f"v{va}", f"v{vb}", f"v{vb} - v{va}"],
        [
            (
                row.set,
                row.dataset_a if row.same_set else f"{row.dataset_a or '-'} / {row.dataset_b or '-'}",
                row.metric,
                fmt_metric(row.a),
                fmt_metric(row.b),
                f"{row.change:+.3f}" if row.change is not None else "not the same set",
            )
            for row in comparison.rows
        ],
    )
    keys = list(comparison.lineage[va])
    print_table(
        "lineage",
        ["", f"v{va}", f"v{vb}"],
        [(key, _cell(comparison.lineage[va][key]), _cell(comparison.lineage[vb][key])) for key in keys],
    )
    decision = comparison.decision
    if decision is None:
        print("decision: neither version was judged against the other by a retrain")
    else:
        print(
            f"decision: v{decision['challenger']} against champion v{decision['champion']}: "
            f"{decision['decision']} ({decision['reason']})"
        )


def _cell(value: object) -> str:
    if value is None or value == "":
        return "-"
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)
