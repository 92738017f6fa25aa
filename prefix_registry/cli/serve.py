"""`prefixctl serve`: the HTTP prediction server."""

from __future__ import annotations

import signal
import sys
from typing import Annotated

import typer

from prefix_registry.cli.app import app, open_registry
from prefix_registry.cli.output import error_console


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    task: Annotated[list[str] | None, typer.Option("--task", help="Serve only these tasks (repeatable).")] = None,
    alias: Annotated[str, typer.Option(help="Alias whose version serves each task.")] = "champion",
    poll_interval: Annotated[float, typer.Option(help="Seconds between checks for alias moves.")] = 5.0,
    max_texts: Annotated[int, typer.Option(help="Most texts accepted in one request.")] = 64,
    max_chars: Annotated[int, typer.Option(help="Most characters accepted in one text.")] = 20_000,
    log: Annotated[bool, typer.Option(help="Write every prediction to the prediction log.")] = True,
) -> None:
    """Serve every task's champion over HTTP, following alias moves without restarting."""
    import uvicorn

    from prefix_registry.monitoring.prediction_log import PredictionLog
    from prefix_registry.serving.app import ServingLimits
    from prefix_registry.serving.factory import build_serving_app

    prediction_log = PredictionLog.from_settings() if log else None
    try:
        app_ = build_serving_app(
            open_registry(),
            tasks=task,
            alias=alias,
            prediction_log=prediction_log,
            limits=ServingLimits(max_texts=max_texts, max_chars=max_chars),
            watch_interval=poll_interval,
        )
    except BaseException:
        if prediction_log is not None:
            prediction_log.close()
        raise
    served = app_.state.table.served()
    error_console.print(f"serving {', '.join(served) or 'no task yet'} on http://{host}:{port}", highlight=False)
    # uvicorn re-raises SIGTERM after its graceful shutdown (log flushed); such a stop exits 0, not 143.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.run(app_, host=host, port=port, log_level="warning")
