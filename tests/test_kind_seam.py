"""The task-kind seam holds: no module outside kinds/ names classification's metrics or probability columns, and the
places that rank, compare or describe scores follow the kind's decision metric and direction."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from prefix_registry.flows.retrain_artifacts import decision_markdown
from prefix_registry.healing.decision import RetrainDecision, RetrainOutcome, RetrainTrigger
from prefix_registry.kinds import CLASSIFICATION, Direction
from prefix_registry.registry.sweeps import best_trial, trial_test_key, trial_validation_key
from prefix_registry.training.search import survivors
from tests.package_layout import source_folders
from tests.test_task_kinds import KIND as LOWER_IS_BETTER

ROOT = Path(__file__).resolve().parents[1]
# The package folders above kinds/: they ask the task's kind for metric and column names.
PACKAGE_FOLDERS = tuple(folder for folder in source_folders() if folder != "kinds")
CLASSIFICATION_NAMES = ("macro_f1", "prob_")
# Modules allowed to name them anyway, each with its reason (empty: none needs to).
EXEMPT: dict[str, str] = {}


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings (of the module, a class or a function)."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def classification_literals(source: str) -> list[tuple[int, str]]:
    """(line, text) of every string constant in code (f-string parts included, docstrings not) that names a
    classification metric or probability column."""
    tree = ast.parse(source)
    docstrings = _docstrings(tree)
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
        and any(name in node.value for name in CLASSIFICATION_NAMES)
    ]


def test_the_scan_finds_names_in_code_but_not_in_docstrings_or_comments() -> None:
    source = (
        '"""Module docstring naming macro_f1."""\n'
        "def f(scores):\n"
        '    """prob_<label> columns."""\n'
        "    # macro_f1 in a comment\n"
        '    return scores["macro_f1"], f"prob_{1}"\n'
    )
    assert classification_literals(source) == [(5, "macro_f1"), (5, "prob_")]


def test_no_module_outside_kinds_names_classification_metrics_or_columns() -> None:
    modules = [path for folder in PACKAGE_FOLDERS for path in sorted((ROOT / folder).rglob("*.py"))]
    assert len(modules) > 50  # the scan reads the package, not an empty folder
    offending = {
        str(path.relative_to(ROOT)): found
        for path in modules
        if str(path.relative_to(ROOT)) not in EXEMPT
        and (found := classification_literals(path.read_text(encoding="utf-8")))
    }
    assert offending == {}


def test_classification_keeps_its_sweep_keys() -> None:
    assert (trial_validation_key(CLASSIFICATION), trial_test_key(CLASSIFICATION)) == (
        "validation_macro_f1",
        "test_macro_f1",
    )
    assert CLASSIFICATION.has_baseline and not LOWER_IS_BETTER.has_baseline


def test_sweep_ranking_follows_the_kinds_direction() -> None:
    assert survivors({0: 0.5, 1: 0.9, 2: 0.7, 3: 0.1, 4: 0.1}, direction=Direction.LOWER) == [3, 4]
    key = trial_validation_key(LOWER_IS_BETTER)
    results = [
        {"number": 0, key: 0.4, "skipped": False},
        {"number": 1, key: 0.2, "skipped": False},
        {"number": 2, key: 0.2, "skipped": False},
        {"number": 3, key: None, "skipped": True},
    ]
    assert best_trial(results, LOWER_IS_BETTER)["number"] == 1


def test_the_retrain_artifact_shows_the_kinds_metric_and_gain() -> None:
    decision = RetrainDecision(
        task="lengths",
        champion_version="1",
        challenger_version="2",
        outcome=RetrainOutcome.PROMOTED,
        reason="lower error",
        trigger=RetrainTrigger.MANUAL,
        champion_scores={"fresh_holdout": {"mae": 0.5, "n": 10}},
        challenger_scores={"fresh_holdout": {"mae": 0.3, "n": 10}},
    )
    markdown = decision_markdown(decision, "http://mlflow", kind=LOWER_IS_BETTER)
    # The champion's column names the kind's metric and links v1's page (in MLflow's machine-learning view).
    assert re.search(r"champion \[v1\]\(http://mlflow/#/models/lengths/versions/1(\?[^)]*)?\) MAE \|", markdown)
    assert "| fresh_holdout | 0.500 | 0.300 | +0.200 | 10 |" in markdown
