"""`prefixctl demo`: the whole story on real data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from prefix_registry.cli.app import JsonOption
from prefix_registry.cli.output import error_console, print_json, print_pairs, print_table
from prefix_registry.errors import ConfigError


def demo(
    quick: Annotated[bool, typer.Option("--quick", help="A smaller story (about 5 minutes).")] = False,
    home: Annotated[Path | None, typer.Option(help="Folder for the demo's stores (wiped first).")] = None,
    rollout: Annotated[
        str,
        typer.Option(
            help="direct: the story as it was; canary: then a bad challenger (flipped labels) rolled back by the "
            "rollout judge and the good v2 promoted by it, each as a 30% canary."
        ),
    ] = "direct",
    as_json: JsonOption = False,
) -> None:
    """The whole story on real data: train, serve, drift, alert, retrain, promote, recover, roll back."""
    from prefix_registry.flows.demo import DemoConfig, run_demo
    from prefix_registry.flows.demo.config import DemoRollout
    from prefix_registry.flows.demo.summary import headline, window_rows
    from prefix_registry.settings import Settings

    demo_home = (home or Settings().home / "demo").expanduser().resolve()
    config = DemoConfig.quick(demo_home) if quick else DemoConfig(home=demo_home)
    try:
        config = config.model_copy(update={"rollout": DemoRollout(rollout)})
    except ValueError:
        raise ConfigError(f"--rollout is one of {[r.value for r in DemoRollout]}, got {rollout!r}") from None

    def say(line: str) -> None:
        error_console.print(line, highlight=False, soft_wrap=True, markup=False)

    summary = run_demo(config, say)
    if as_json:
        print_json(summary)
        return
    print_table(
        "live traffic, window by window",
        ["window", "texts", "served by", "live accuracy", "monitor"],
        window_rows(summary),
    )
    print_pairs("summary", headline(summary))
    print_pairs("open the UIs", summary["open_the_uis"])
