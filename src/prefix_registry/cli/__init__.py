"""`prefixctl`: the command line. Each command parses its options, calls the libraries, and prints the result.

User mistakes (unknown task, bad data, missing version...) print one `error:` line and exit with status 2, and so
do a start under library versions the project does not support and an error of a service a command talks to
(MLflow, S3, a database: see `service_errors.py`).
"""

from __future__ import annotations

import sys

from rich.markup import escape

from prefix_registry.cli import (
    alerts,
    compare,
    demo,
    flows,
    keys,
    monitor,
    predict,
    rollout,
    router,
    serve,
    sweep,
    train,
    versions,
)
from prefix_registry.cli.app import app
from prefix_registry.cli.output import error_console
from prefix_registry.cli.service_errors import service_error_line
from prefix_registry.errors import PrefixRegistryError, mask_credentials

__all__ = ["app", "main"]

# Every command, registered here (not by importing a module for its side effects), in the order `prefixctl --help`
# lists them; the command groups come after the commands.
COMMANDS = (
    train.train,
    sweep.sweep,
    versions.tasks,
    versions.versions,
    versions.promote,
    versions.rollback,
    versions.verify,
    versions.relog,
    versions.history,
    compare.compare,
    predict.predict,
    predict.evaluate,
    predict.export,
    serve.serve,
    monitor.monitor,
    monitor.retrain,
    demo.demo,
)
COMMAND_GROUPS = {
    "keys": keys.keys_app,
    "flows": flows.flows_app,
    "alerts": alerts.alerts_app,
    "rollout": rollout.rollout_app,
    "router": router.router_app,
}
for _command in COMMANDS:
    app.command()(_command)
for _name, _group in COMMAND_GROUPS.items():
    app.add_typer(_group, name=_name)


def main() -> None:
    """Entry point of the `prefixctl` console script."""
    from prefix_registry.compat import require_supported_versions
    from prefix_registry.training.quiet import quiet_libraries

    try:
        require_supported_versions()
        quiet_libraries()
        app()
    except PrefixRegistryError as error:
        error_console.print(f"[red]error:[/red] {mask_credentials(str(error))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        error_console.print("interrupted")
        sys.exit(130)
    except Exception as error:
        line = service_error_line(error)
        if line is None:
            raise  # a bug: its traceback is what a report needs
        error_console.print(f"[red]error:[/red] {escape(mask_credentials(line))}", highlight=False, soft_wrap=True)
        sys.exit(2)
