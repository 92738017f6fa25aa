"""`prefixctl alerts ...`: alerts waiting in the durable outbox."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from prefix_registry.cli.app import JsonOption
from prefix_registry.cli.output import print_json, print_pairs, print_table
from prefix_registry.errors import PrefixRegistryError

if TYPE_CHECKING:
    from prefix_registry.alerts import AlertDispatcher

alerts_app = typer.Typer(help="Alerts waiting in the durable outbox.", no_args_is_help=True)


def _dispatcher() -> AlertDispatcher:
    """The dispatcher of the configured webhooks; a one-line error when none is configured."""
    from prefix_registry.alerts import dispatcher_from_settings
    from prefix_registry.settings import Settings

    dispatcher = dispatcher_from_settings(Settings())
    if dispatcher is None:
        raise PrefixRegistryError("no alert webhooks configured: set PREFIX_REGISTRY_ALERT_WEBHOOKS")
    return dispatcher


@alerts_app.command("pending")
def alerts_pending(as_json: JsonOption = False) -> None:
    """List alerts not yet delivered (webhook URLs shown redacted)."""
    rows = _dispatcher().pending()
    if as_json:
        print_json(rows)
        return
    print_table(
        f"{len(rows)} alert(s) waiting",
        ["alert", "kind", "task", "sink", "attempts", "last error"],
        [(r["alert_id"][:8], r["kind"], r["task"], r["sink"], r["attempts"], r["last_error"] or "") for r in rows],
    )


@alerts_app.command("resend")
def alerts_resend(as_json: JsonOption = False) -> None:
    """Try every waiting alert again now, oldest first."""
    dispatcher = _dispatcher()
    report = dispatcher.redeliver_outbox(force=True)
    summary = {"delivered": sum(d.delivered for d in report.deliveries), "still_waiting": len(dispatcher.pending())}
    if as_json:
        print_json({**summary, **report.to_dict()})
    else:
        print_pairs("resend", summary)
