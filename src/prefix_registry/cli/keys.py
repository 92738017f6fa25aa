"""`prefixctl keys create | list | revoke`: scoped API keys for the HTTP server (stored hashed)."""

from __future__ import annotations

from typing import Annotated

import typer

from prefix_registry.cli.app import JsonOption
from prefix_registry.cli.output import error_console, print_json, print_pairs, print_table

keys_app = typer.Typer(help="Scoped API keys for the HTTP server (stored hashed).", no_args_is_help=True)


def _store():
    from prefix_registry.traffic.api_keys import ApiKeyStore

    return ApiKeyStore.from_settings()


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="Name of the key, recorded with every prediction and label it sends.")],
    scopes: Annotated[str, typer.Option(help="Comma-separated scopes: predict, feedback, admin.")] = "predict",
    tasks: Annotated[
        str | None,
        typer.Option(help="Comma-separated tasks the key may act on (default: every task); an empty list is refused."),
    ] = None,
    all_tasks: Annotated[
        bool, typer.Option("--all-tasks", help="The key may act on every task (say so explicitly, instead of --tasks).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Create a key and print it once: only its hash is stored."""
    from prefix_registry.traffic.api_keys import parse_scopes, parse_tasks

    store = _store()
    try:
        created = store.create(name, parse_scopes(scopes), parse_tasks(tasks, all_tasks))
    finally:
        store.close()
    if as_json:
        print_json({**created.api_key.summary(), "key": created.key})
        return
    print_pairs(f"API key {name}", {**created.api_key.summary(), "key": created.key})
    error_console.print("the key is shown only now: store it in a secret manager", highlight=False)


@keys_app.command("list")
def keys_list(as_json: JsonOption = False) -> None:
    """List every key (never its secret), revoked ones included."""
    store = _store()
    try:
        found = store.all_keys()
    finally:
        store.close()
    if as_json:
        print_json([key.summary() for key in found])
        return
    print_table(
        f"{len(found)} API key(s)",
        ["name", "scopes", "tasks", "created", "revoked"],
        [(k.name, ",".join(k.scopes), _tasks_text(k.tasks), k.created_at, k.revoked_at or "") for k in found],
    )


def _tasks_text(tasks: tuple[str, ...] | None) -> str:
    """None is every task; an empty list (stored by earlier versions for `--tasks ''`) is no task."""
    return "all" if tasks is None else ",".join(tasks) or "none"


@keys_app.command("revoke")
def keys_revoke(
    name: Annotated[str, typer.Argument(help="Name of the key to revoke.")], as_json: JsonOption = False
) -> None:
    """Revoke a key: its requests get 401 and its labels are left out of every later retrain."""
    store = _store()
    try:
        revoked = store.revoke(name)
    finally:
        store.close()
    if as_json:
        print_json(revoked.summary())
    else:
        print_pairs(f"revoked {name}", revoked.summary())
