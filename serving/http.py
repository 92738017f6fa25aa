"""The one shape of every error the server answers: `{"error": message, "status": code}`."""

from __future__ import annotations

from fastapi.responses import JSONResponse


class HTTPError(Exception):
    """An answer other than 200, with a one-line message naming what was expected and what was received."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    # A message may quote client text; a lone surrogate in it would make the UTF-8 encoding of the answer fail (a
    # 500), so such characters are written as backslash escapes.
    safe = message.encode("utf-8", "backslashreplace").decode("utf-8")
    return JSONResponse({"error": safe, "status": status}, status_code=status, headers=headers)
