"""`prefixctl tasks | versions | promote | rollback | verify | relog | history`: what is registered, where the
aliases point, and whether each version is intact and an MLflow model."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from prefix_registry.cli.app import JsonOption, open_registry
from prefix_registry.cli.output import fmt_metric, print_json, print_pairs, print_table


def tasks(as_json: JsonOption = False) -> None:
    """List tasks with their aliases."""
    registry = open_registry()
    found = {task: registry.aliases(task) for task in registry.tasks()}
    if as_json:
        print_json([{"task": task, "aliases": aliases} for task, aliases in found.items()])
    else:
        print_table("tasks", ["task", "aliases"], [(task, _alias_text(aliases)) for task, aliases in found.items()])


def versions(task: Annotated[str, typer.Argument(help="Task name.")], as_json: JsonOption = False) -> None:
    """List a task's versions: aliases, metrics, method, base, trigger, parent, creation time; and its regimes with
    their champions, and its router, when it has regimes."""
    from prefix_registry.registry.regimes import regime_slots
    from prefix_registry.registry.routers import router_versions

    registry = open_registry()
    found = registry.versions(task)
    slots = regime_slots(registry, task)
    routers = router_versions(registry, task) if slots else []
    if as_json:
        if not slots:  # a task without regimes prints what it always has
            print_json([v.summary() for v in found])
            return
        print_json(
            {
                "task": task,
                "versions": [v.summary() for v in found],
                "regimes": [slot.summary() for slot in slots],
                "router_versions": [v.summary() for v in routers],
            }
        )
        return
    if slots:
        print_table(
            f"{task}: {len(slots)} regime(s)",
            ["regime", "model", "champion", "versions"],
            [(s.regime, s.model, f"v{s.champion}" if s.champion else "-", str(s.versions)) for s in slots],
        )
        router_champion = next((v for v in routers if "champion" in v.aliases), None)
        print_pairs(
            f"{task}: router",
            {
                "versions": len(routers),
                "champion": f"v{router_champion.version}" if router_champion else None,
                "held-out accuracy": fmt_metric(router_champion.accuracy) if router_champion else None,
            },
        )
    # Columns named by the task's kind (classification: macro-F1 against the linear probe, then accuracy).
    kind = found[0].kind if found else None
    decision = kind.label if kind else "macro-F1"
    second = kind.metric_names[1] if kind and len(kind.metric_names) > 1 else "accuracy"
    print_table(
        f"{task}: {len(found)} version(s)",
        [
            "version",
            "aliases",
            f"own test {decision}",
            "probe" if kind is None or kind.head_is_linear_probe else "baseline",
            "beats",
            "own test acc" if second == "accuracy" else f"own test {second}",
            "precision check",
            "method",
            "base",
            "trigger",
            "parent",
            "created",
        ],
        [
            (
                v.version,
                ",".join(v.aliases),
                fmt_metric(v.metrics.get(v.kind.version_metric)),
                fmt_metric(v.metrics.get(v.kind.baseline_metric)),
                {True: "yes", False: "NO", None: "-"}[v.beats_baseline],
                fmt_metric(v.metrics.get(f"own_test_{second}")),
                _precision_text(v.precision_checks, v.kind.decision_metric),
                v.method,
                v.base,
                v.trigger,
                v.parent_version or "",
                v.created_at.strftime("%Y-%m-%d %H:%M"),
            )
            for v in found
        ],
    )


def promote(
    task: Annotated[str, typer.Argument(help="Task name.")],
    version: Annotated[str, typer.Argument(help="Version to promote.")],
    alias: Annotated[str, typer.Option(help="Alias to move.")] = "champion",
    reason: Annotated[str | None, typer.Option(help="Why; kept in the alias history.")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Promote a version below its baseline (needs --reason).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Point an alias (champion by default) at VERSION, recording who, when and why.

    A champion must beat its linear-probe baseline; --force --reason "..." overrides, and the reason is kept.
    """
    change = open_registry().promote(task, version, alias=alias, reason=reason, force=force)
    if as_json:
        print_json(change.summary())
    else:
        print_pairs(f"{task}: {alias} promoted", change.summary())


def rollback(
    task: Annotated[str, typer.Argument(help="Task name.")],
    to: Annotated[str | None, typer.Option("--to", help="Version to return to (default: the previous one).")] = None,
    alias: Annotated[str, typer.Option(help="Alias to move back.")] = "champion",
    reason: Annotated[str | None, typer.Option(help="Why; kept in the alias history.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Move an alias back to the version it pointed to before (or to --to VERSION) in one step."""
    change = open_registry().rollback(task, to=to, alias=alias, reason=reason)
    if as_json:
        print_json(change.summary())
    else:
        print_pairs(f"{task}: {alias} rolled back", change.summary())


def verify(
    task: Annotated[str, typer.Argument(help="Task name.")],
    version: Annotated[str | None, typer.Argument(help="Version to check (default: every version).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Check that each version's adapter, as stored now, is byte for byte what was registered.

    Statuses: signed, verified, legacy (unsigned/legacy: registered before folder digests), FAILED. Exits 2 when
    any version fails.
    """
    from prefix_registry.errors import PrefixRegistryError
    from prefix_registry.registry.verification import verify_versions

    checks = verify_versions(open_registry(), task, version)
    if as_json:
        print_json([check.summary() for check in checks])
    else:
        print_table(
            f"{task}: adapter integrity",
            ["version", "status", "detail"],
            [(check.version, check.status, check.detail) for check in checks],
        )
    failed = [check.version for check in checks if not check.ok]
    if failed:
        raise PrefixRegistryError(
            f"{task}: version(s) {', '.join(failed)} do not match what was registered; expected every version to verify"
        )


def relog(
    task: Annotated[str, typer.Argument(help="Task name.")],
    version: Annotated[str | None, typer.Argument(help="Version to relog (default: every version).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Make versions registered before versions were MLflow models loadable as `models:/TASK@ALIAS`.

    Each version's adapter is verified first; MLflow's files (MLmodel, pinned requirements, an input example,
    pooling.py) are then logged beside it and recorded, its own files and digest unchanged. Statuses: relogged,
    already (an MLflow model already), FAILED (its adapter does not verify). Exits 2 when any version fails.
    """
    from prefix_registry.errors import PrefixRegistryError
    from prefix_registry.registry.mlflow_model import relog_versions

    outcomes = relog_versions(open_registry(), task, version)
    if as_json:
        print_json([outcome.summary() for outcome in outcomes])
    else:
        print_table(
            f"{task}: MLflow models",
            ["version", "status", "detail"],
            [(outcome.version, str(outcome.status), outcome.detail) for outcome in outcomes],
        )
    failed = [outcome.version for outcome in outcomes if not outcome.ok]
    if failed:
        raise PrefixRegistryError(
            f"{task}: version(s) {', '.join(failed)} were not relogged: their adapters do not verify; expected every "
            "version to verify first (prefixctl verify)"
        )


def history(
    task: Annotated[str, typer.Argument(help="Task name.")],
    move_from_tags: Annotated[
        bool,
        typer.Option(
            "--move-from-tags",
            help="First move the history earlier versions kept as registered-model tags into the history database "
            "(the next promote or rollback does it too).",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Show every alias move of a task: promotions and rollbacks, who, when, why."""
    registry = open_registry()
    if move_from_tags:
        moved = registry.move_alias_history_out_of_tags(task)
        if not as_json:
            print(f"{task}: {moved} history entr{'y' if moved == 1 else 'ies'} moved out of the model's tags")
    events = registry.alias_history(task)
    if as_json:
        print_json([vars(e) for e in events])
        return
    print_table(
        f"{task}: alias history",
        ["#", "alias", "action", "from", "to", "actor", "at", "reason"],
        [
            (
                e.sequence,
                e.alias,
                e.action,
                e.from_version or "-",
                e.to_version,
                e.actor,
                e.at,
                e.reason or "",
            )
            for e in events
        ],
    )


def _precision_text(checks: dict[str, dict[str, Any]], metric: str) -> str:
    """`int8 0.705 (-0.73) FAIL, bf16 0.712 (-0.02) ok`: each lower precision's own-test score, its change from
    fp32 in points and whether it passed its check; `-` for a version never checked."""
    parts = []
    for precision in ("int8", "bf16"):
        check = checks.get(precision, {})
        if metric in check:
            verdict = {True: "ok", False: "FAIL", None: "?"}[check.get("passed")]
            loss = check.get("loss_points")
            change = f" ({-loss:+.2f})" if isinstance(loss, float) else ""
            parts.append(f"{precision} {check[metric]:.3f}{change} {verdict}")
    return ", ".join(parts) or "-"


def _alias_text(aliases: dict[str, str]) -> str:
    return ", ".join(f"{alias}=v{version}" for alias, version in sorted(aliases.items()))
