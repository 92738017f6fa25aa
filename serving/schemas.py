"""The HTTP API's request and response bodies, so that the OpenAPI schema (`/docs`, `/openapi.json`) describes both.

Requests are validated here (lone surrogates are refused with 422, never a 500 later); responses are what the
handlers in `serving/app.py` return, serialised through these models.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


def _unicode(value: str | None) -> str | None:
    if value is None:
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (it holds a lone surrogate)") from None
    return value


class PredictRequest(BaseModel):
    # Strict: a value of the wrong JSON type is refused, never coerced ("yes" is no boolean, 1 no string).
    model_config = ConfigDict(strict=True)

    task: str = Field(max_length=64, description="Task whose serving version classifies the texts.")
    texts: list[str] = Field(description="Texts to classify.")
    routing_key: str | None = Field(
        default=None,
        max_length=200,
        description="Who the request is for (a user or session id): during a canary rollout one routing key always "
        "gets the same version. Default: the API key's name.",
    )

    regime: str | None = Field(
        default=None,
        max_length=64,
        description="For a task with regimes: the regime whose champion reads every text (overrides the router).",
    )

    _check_task = field_validator("task", "routing_key", "regime")(_unicode)

    @field_validator("texts")
    @classmethod
    def _check_texts(cls, texts: list[str]) -> list[str]:
        for i, text in enumerate(texts):
            try:
                _unicode(text)
            except ValueError as error:
                raise ValueError(f"texts[{i}] {error}") from None
        return texts


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(strict=True)

    prediction_id: str = Field(max_length=64, description="The id returned with a prediction.")
    label: str = Field(max_length=200, description="The true label of that prediction's text.")
    correction: bool = Field(default=False, description="Replace a label given before (the old one is kept).")

    _check_strings = field_validator("prediction_id", "label")(_unicode)


class Prediction(BaseModel):
    prediction_id: str = Field(description="Id to send feedback for this text with.")
    label: str = Field(description="The predicted label.")
    confidence: float = Field(description="Probability of the predicted label.")
    probabilities: dict[str, float] = Field(description="Probability of every label of the task.")
    version: str = Field(description="The version that answered.")
    regime: str | None = Field(default=None, description="For a task with regimes: the regime that answered.")
    router_confidence: float | None = Field(
        default=None,
        description="For a task with regimes: the router's probability of its pick (none when the request named the "
        "regime); below the router's threshold the fallback regime answered.",
    )


class PredictResponse(BaseModel):
    task: str
    version: str = Field(description="The version serving the task when the request was answered.")
    request_id: str = Field(description="The client's X-Request-Id when it looks like an id, else a new one.")
    predictions: list[Prediction] = Field(description="One per text, in the request's order.")


class FeedbackResponse(BaseModel):
    prediction_id: str
    task: str
    version: str = Field(description="The version that made the prediction.")
    label: str = Field(description="The label now attached to the prediction.")
    predicted_label: str
    correct: bool = Field(description="Whether the prediction was right.")


class TaskSummary(BaseModel):
    task: str
    alias: str = Field(description="The alias the server follows for this task.")
    serving_version: str | None
    loaded_at: str | None = Field(description="When the serving version was attached (ISO time).")
    method: str | None = Field(description="PEFT method of the serving adapter.")
    base: str | None = Field(description="Base model the adapter sits on.")
    labels: list[str]
    swaps: int = Field(description="Version changes since the server started.")
    last_checked: str | None = Field(description="Last look at the registry for an alias move (ISO time).")
    registry_ok: bool
    last_error: str | None
    rollout: dict[str, object] | None = Field(
        default=None,
        description="The task's running rollout (mode, share, challenger and champion versions, start, actor), if any.",
    )


class TasksResponse(BaseModel):
    tasks: list[TaskSummary]
    registry_ok: bool
    registry_error: str | None
    resident_base_models: list[str] = Field(description="Base models loaded once and shared by every task.")
    base_loads: int = Field(description="How many times a base model was loaded since start.")


class HealthResponse(BaseModel):
    status: str = Field(description="ok, or degraded while the registry is unreachable (serving goes on).")
    registry_ok: bool
    registry_error: str | None


class ErrorResponse(BaseModel):
    error: str = Field(description="One line naming what was expected and what was received.")
    status: int


ERRORS: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorResponse, "description": meaning}
    for status, meaning in {
        400: "Malformed JSON or a body that is not UTF-8",
        401: "Missing, unknown or revoked API key",
        403: "The key lacks the scope, or is for another task",
        404: "Unknown task or prediction id",
        409: "A different label was already given (send correction: true)",
        413: "Body, text count or text length above the limit",
        422: "Invalid request",
        429: "Feedback or prediction rate limit of the key (see Retry-After)",
        503: "The prediction could not be logged (nothing answered), a backend is down, or the key store has been "
        "unreadable past its grace period",
    }.items()
}
