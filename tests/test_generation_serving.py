"""Generation tasks served (issue 23): /v1/generate writes, per row, what PEFT's own greedy `generate` writes for the
version alone, rows of different generating prefixes decode together, every output is logged and takes a reference
text; an exported adapter loads with plain PEFT and writes the same text."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from prefix_registry.inference.engine import Row
from prefix_registry.inference.generation import decode, generate_rows
from prefix_registry.kinds.generation import rouge_scores
from prefix_registry.registry.store import PrefixRegistry
from prefix_registry.registry.training_runs import train_and_register
from prefix_registry.serving.app import ServingLimits
from prefix_registry.serving.factory import build_serving_app
from prefix_registry.settings import Settings
from prefix_registry.traffic.prediction_log import PredictionLog
from prefix_registry.training.config import TrainConfig
from prefix_registry.training.data import LabelledTexts

PAIRS = [
    "the cat sat on the mat today",
    "a dog ran in the park quickly",
    "birds sing early in the morning",
    "rain fell on the old roof",
    "she reads books every night",
    "he cooks pasta for dinner",
    "kids play football after school",
    "the sun rises over hills",
]
INPUTS = ["the cat sat on the mat today", "kids play football", "a long sentence about the weather in the mountains"]
INSTRUCTION = "Copy the first three words of: {input}"
MAX_NEW_TOKENS = 5  # each version's own budget
SERVER_BOUND = 8  # the server's bound on a request's max_new_tokens


def _config(method: str) -> TrainConfig:
    return TrainConfig(
        kind="generation",
        base="smollm2",
        method=method,
        virtual_tokens=4,
        max_length=32,
        max_new_tokens=MAX_NEW_TOKENS,
        max_steps=1,
        batch_size=4,
        learning_rate=0.05,
        instruction=INSTRUCTION,
    )


@pytest.fixture(scope="module")
def registry(module_home: Path) -> PrefixRegistry:
    """Two generation tasks on SmolLM2, one step each: `first-words` (prefix tuning: its virtual tokens in the KV
    cache) and `first-words-pt` (prompt tuning: in front of the input embeddings)."""
    registry = PrefixRegistry(Settings())
    frame = pd.DataFrame({"text": PAIRS, "label": [" ".join(text.split()[:3]) for text in PAIRS]})
    for task, method in (("first-words", "prefix"), ("first-words-pt", "prompt")):
        train_and_register(registry, task, LabelledTexts(frame, "pairs"), _config(method), promote=True, progress=False)
    return registry


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PredictionLog]:
    prediction_log = PredictionLog(f"sqlite:///{tmp_path_factory.mktemp('log') / 'predictions.db'}")
    yield prediction_log
    prediction_log.close()


@pytest.fixture(scope="module")
def client(registry: PrefixRegistry, log: PredictionLog) -> Iterator[TestClient]:
    limits = ServingLimits(max_texts=4, max_chars=500, max_new_tokens=SERVER_BOUND)
    app = build_serving_app(registry, prediction_log=log, limits=limits, watch_interval=None)
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def peft_alone(registry: PrefixRegistry, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """Per task, what `prefixctl export`'s adapter writes for each input alone, loaded with plain PEFT on the base
    (`PeftModel.from_pretrained`) and decoded by its greedy `generate` with the exported instruction and budget."""
    from peft import PeftModel

    from prefix_registry.cli.predict import export
    from prefix_registry.training.base_models import load_base_for_generation, resolve_base
    from prefix_registry.training.generation import generate_texts

    written = {}
    for task in ("first-words", "first-words-pt"):
        out = tmp_path_factory.mktemp("export") / task
        export(task, version="1", out=out, as_json=True)
        manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
        config = manifest["train_config"]
        base = load_base_for_generation(resolve_base(manifest["base"], registry.settings.resolved_cache_dir))
        model = PeftModel.from_pretrained(base.model, str(out)).eval()
        written[task] = [
            generate_texts(
                model, base.tokenizer, [text], config["instruction"], config["max_length"], config["max_new_tokens"]
            )[0]
            for text in INPUTS
        ]
    return written


def _generate(client: TestClient, task: str, inputs: list[str], **options: object) -> dict:
    response = client.post("/v1/generate", json={"task": task, "inputs": inputs, **options})
    assert response.status_code == 200, response.text
    return response.json()


def test_generate_writes_greedily_what_the_exported_adapter_writes_with_plain_peft_for_each_input_alone(
    client: TestClient, peft_alone: dict[str, list[str]]
) -> None:
    for task in ("first-words", "first-words-pt"):
        answer = _generate(client, task, INPUTS)
        assert (answer["task"], answer["version"], answer["max_new_tokens"]) == (task, "1", MAX_NEW_TOKENS)
        assert [g["text"] for g in answer["generations"]] == peft_alone[task]
        for generation in answer["generations"]:
            assert 0 <= generation["new_tokens"] <= MAX_NEW_TOKENS
            assert generation["truncated"] == (generation["new_tokens"] == MAX_NEW_TOKENS)
    # Some output is non-trivial, so that the comparison above compares something.
    assert any(text for texts in peft_alone.values() for text in texts)


def test_rows_of_different_generating_prefixes_decode_together_as_each_would_alone(
    client: TestClient, peft_alone: dict[str, list[str]]
) -> None:
    table = client.app.state.table  # type: ignore[attr-defined]
    prefix, prompt = table.current("first-words"), table.current("first-words-pt")
    rows = [Row(text, attached) for text in INPUTS for attached in (prefix, prompt)]  # interleaved, one call
    written = [decode(row.prefix, tokens) for row, tokens in zip(rows, generate_rows(rows), strict=True)]
    assert written[0::2] == peft_alone["first-words"]
    assert written[1::2] == peft_alone["first-words-pt"]


def test_every_generation_is_logged_with_its_output_and_takes_a_reference_text(
    client: TestClient, log: PredictionLog
) -> None:
    answer = _generate(client, "first-words", INPUTS[:1], max_new_tokens=2)
    generation = answer["generations"][0]
    assert answer["max_new_tokens"] == 2 and generation["new_tokens"] <= 2
    record = log.get(generation["prediction_id"])
    assert record is not None
    assert (record.task, record.version, record.text, record.predicted_label) == (
        "first-words",
        "1",
        INPUTS[0],
        generation["text"],
    )
    assert record.probabilities == {
        "output_length": float(len(generation["text"].split())),
        "new_tokens": float(generation["new_tokens"]),
        "truncated": float(generation["truncated"]),
    }

    reference = "the cat sat"
    response = client.post(
        "/v1/generate/feedback", json={"prediction_id": generation["prediction_id"], "reference": reference}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["generated"] == generation["text"] and body["reference"] == reference
    assert body["rougeL"] == pytest.approx(rouge_scores([reference], [generation["text"]])["rougeL"])
    stored = log.get(generation["prediction_id"])
    assert stored is not None and stored.feedback_label == reference
    # A second, different reference needs `correction`, as a label does.
    again = {"prediction_id": generation["prediction_id"], "reference": "another text"}
    assert client.post("/v1/generate/feedback", json=again).status_code == 409
    missing = client.post("/v1/generate/feedback", json={"prediction_id": "nope", "reference": "x"})
    assert missing.status_code == 404
    as_label = client.post("/v1/feedback", json={"prediction_id": generation["prediction_id"], "label": "x"})
    assert as_label.status_code == 422 and "send its reference text to /v1/generate/feedback" in as_label.text


def test_sampling_with_a_seed_is_reproducible(client: TestClient) -> None:
    options = {"do_sample": True, "seed": 7, "max_new_tokens": 4}
    first = _generate(client, "first-words-pt", INPUTS[:2], **options)
    second = _generate(client, "first-words-pt", INPUTS[:2], **options)
    assert [g["text"] for g in first["generations"]] == [g["text"] for g in second["generations"]]


@pytest.mark.parametrize(
    ("payload", "status", "message"),
    [
        (
            {"task": "first-words", "inputs": ["a"], "max_new_tokens": SERVER_BOUND + 1},
            422,
            f"max_new_tokens: expected at most {SERVER_BOUND} (this server's bound), got {SERVER_BOUND + 1}",
        ),
        ({"task": "first-words", "inputs": []}, 422, "inputs must hold at least one text"),
        ({"task": "first-words", "inputs": ["a"] * 5}, 413, "5 inputs in one request; at most 4 are accepted"),
        ({"task": "first-words", "inputs": ["x" * 501]}, 413, "inputs[0] has 501 characters; at most 500"),
        ({"task": "nope", "inputs": ["a"]}, 404, "unknown task 'nope'"),
        ({"task": "first-words", "inputs": ["a"], "max_new_tokens": 0}, 422, "max_new_tokens"),
    ],
)
def test_bad_generate_requests_get_a_4xx_naming_what_was_expected(
    client: TestClient, payload: dict, status: int, message: str
) -> None:
    response = client.post("/v1/generate", json=payload)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_a_generation_task_is_not_classified_nor_a_generation_labelled(client: TestClient) -> None:
    response = client.post("/v1/predict", json={"task": "first-words", "texts": ["a dog"]})
    assert response.status_code == 422
    assert "is a generation task: expected a classifier, send it to /v1/generate" in response.json()["error"]


def test_generate_takes_the_same_api_keys_scopes_and_tasks_as_predict(registry: PrefixRegistry, tmp_path: Path) -> None:
    from prefix_registry.traffic.api_keys import ApiKeyStore

    keys = ApiKeyStore(f"sqlite:///{tmp_path / 'api_keys.db'}")
    log = PredictionLog(f"sqlite:///{tmp_path / 'predictions.db'}")  # its own: the app closes its log when it stops
    try:
        writer = keys.create("writer", ["predict"], ("first-words",)).key
        other = keys.create("other", ["predict", "feedback"], ("first-words-pt",)).key
        app = build_serving_app(registry, prediction_log=log, api_keys=keys, watch_interval=None)
        body = {"task": "first-words", "inputs": ["a dog ran"], "max_new_tokens": 2}
        with TestClient(app) as keyed:
            assert keyed.post("/v1/generate", json=body).status_code == 401
            wrong_task = keyed.post("/v1/generate", json=body, headers={"Authorization": f"Bearer {other}"})
            assert wrong_task.status_code == 403 and "may not act on task 'first-words'" in wrong_task.json()["error"]
            answer = keyed.post("/v1/generate", json=body, headers={"Authorization": f"Bearer {writer}"})
            assert answer.status_code == 200, answer.text
            prediction_id = answer.json()["generations"][0]["prediction_id"]
            reference = {"prediction_id": prediction_id, "reference": "a dog ran"}
            refused = keyed.post("/v1/generate/feedback", json=reference, headers={"Authorization": f"Bearer {writer}"})
            assert refused.status_code == 403 and "lacks scope 'feedback'" in refused.json()["error"]
            schema = keyed.get("/openapi.json", headers={"Authorization": f"Bearer {writer}"}).json()
            record = log.get(prediction_id)
    finally:
        keys.close()
        log.close()
    assert record is not None and record.key_name == "writer"
    responses = schema["paths"]["/v1/generate"]["post"]["responses"]
    assert responses["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/GenerateResponse")
    assert responses["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")


def test_versions_compare_promote_and_rollback_work_on_a_generation_task_and_the_server_follows(
    client: TestClient, registry: PrefixRegistry, cli
) -> None:
    frame = pd.DataFrame({"text": PAIRS, "label": [" ".join(text.split()[-2:]) for text in PAIRS]})
    train_and_register(registry, "first-words", LabelledTexts(frame, "last-words"), _config("prefix"), progress=False)
    listed = cli("versions", "first-words", "--json")
    assert listed.exit_code == 0, listed.stderr
    rows = {str(row["version"]): row for row in listed.json()}
    assert set(rows) == {"1", "2"}

    compared = cli("compare", "first-words", "1", "2", "--json")
    assert compared.exit_code == 0, compared.stderr
    shown = json.dumps(compared.json())
    assert "rougeL" in shown and "bleu" in shown

    promoted = cli("promote", "first-words", "2", "--reason", "the second copy")
    assert promoted.exit_code == 0, promoted.stderr
    table = client.app.state.table  # type: ignore[attr-defined]
    table.refresh()
    assert _generate(client, "first-words", INPUTS[:1])["version"] == "2"

    rolled = cli("rollback", "first-words", "--reason", "back to the first")
    assert rolled.exit_code == 0, rolled.stderr
    assert registry.resolve("first-words").version == "1"
    table.refresh()
    assert _generate(client, "first-words", INPUTS[:1])["version"] == "1"


def test_inputs_of_another_kind_raise_input_and_output_drift_on_a_generation_task(
    registry: PrefixRegistry, tmp_path: Path
) -> None:
    """Short English sentences answered with three words, then SQL queries answered with nothing: the monitor
    flags the inputs (length, vocabulary, embedding) and the outputs (length, share of empty outputs)."""
    from datetime import UTC, datetime, timedelta

    import numpy as np

    from prefix_registry.kinds import GENERATION
    from prefix_registry.monitoring.drift_config import DriftConfig
    from prefix_registry.monitoring.monitor import MonitorRequest, run_monitor
    from prefix_registry.traffic.prediction_records import PredictionRecord

    subjects = ["the cat", "a dog", "my friend", "the teacher", "our neighbour", "a child"]
    actions = ["reads a book", "walks home", "cooks dinner", "sings a song", "plays outside"]
    english = [f"{s} {a} {when}" for s in subjects for a in actions for when in ("today",)][:30]
    queries = [f"SELECT id, total_{i} FROM orders_{i} WHERE amount > {i * 37} ORDER BY id DESC;" for i in range(30)]
    started = datetime.now(UTC) - timedelta(hours=1)
    records = []
    for offset, (text, output) in enumerate(
        [(text, " ".join(text.split()[:3])) for text in english] + [(query, "") for query in queries]
    ):
        scores = GENERATION.logged_prediction(np.asarray([output], dtype=object), []).scores
        records.append(
            PredictionRecord.new(
                "first-words", "1", text, output, scores, created_at=started + timedelta(seconds=offset)
            )
        )
    drift_log = PredictionLog(f"sqlite:///{tmp_path / 'drift.db'}")
    try:
        drift_log.commit(records)
        request = MonitorRequest(task="first-words", current_last=30, reference_last=30, version="1")
        outcome = run_monitor(
            registry, drift_log, request, config=DriftConfig(min_window=20), send_alerts=False, record=False
        )
    finally:
        drift_log.close()
    verdict = outcome.verdict
    assert verdict.drift_detected
    drifted = set(verdict.drifted_signals)
    assert {"text_length", "output_length", "empty_output"} <= drifted, verdict.to_dict()
    assert drifted & {"oov_rate", "embedding"}, verdict.to_dict()


def test_a_retrain_of_a_generation_task_judges_its_challenger_against_the_champion_on_the_same_fresh_holdout(
    registry: PrefixRegistry, tmp_path: Path
) -> None:
    """Fresh (input, reference) pairs from feedback retrain the prompt-tuned task; both versions are scored by ROUGE-L
    on the same fresh hold-out (and the champion's reference test split), and the challenger is registered."""
    from prefix_registry.healing.retrain_policy import RetrainPolicy
    from prefix_registry.healing.retraining import retrain
    from prefix_registry.kinds import GENERATION
    from prefix_registry.traffic.prediction_records import PredictionRecord

    task = "first-words-pt"
    fresh_log = PredictionLog(f"sqlite:///{tmp_path / 'fresh.db'}")
    try:
        texts = [f"{text} again" for text in PAIRS] + [f"now {text}" for text in PAIRS[:4]]
        records = [PredictionRecord.new(task, "1", text, "", {"output_length": 0.0}) for text in texts]
        fresh_log.commit(records)
        for record, text in zip(records, texts, strict=True):
            fresh_log.attach_feedback(record.prediction_id, " ".join(text.split()[:3]))
        policy = RetrainPolicy(min_fresh_labels=10, holdout_fraction=0.25, epochs=1, max_length=32)
        decision = retrain(registry, fresh_log, task, policy)
    finally:
        fresh_log.close()
    assert (decision.task, decision.champion_version, decision.challenger_version) == (task, "1", "2")
    assert decision.data["fresh_holdout"] == 3
    for scores in (decision.champion_scores, decision.challenger_scores):
        assert set(scores) == {"fresh_holdout", "reference_test"}
        assert scores["fresh_holdout"]["n"] == 3 and scores["reference_test"]["n"] == 1, scores
        assert 0.0 <= scores["fresh_holdout"][GENERATION.decision_metric] <= 1.0, scores
    assert registry.aliases(task)["challenger"] == "2"
