"""The HTTP layer of `dualenc serve`: parse a request, rank, write the response.

Ranking itself is `Ranker.rank` and `ResponseBank.respond`; this module only checks requests
against the limits, calls them, and turns the results and every error into JSON. Bad input
always gets a 4xx with a body `{"error": "what is wrong"}`:

    400  malformed JSON, or a Content-Length that is not a number
    404  /respond on a server started without a response bank (or an unknown path)
    413  a body over the size limit, refused before it is parsed
    415  a body that is not JSON
    422  a missing field, a wrong type, an empty or over-limit value
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import asdict, dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from dualenc import __version__
from dualenc.index import ResponseBank
from dualenc.ranker import Ranker

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass
class Limits:
    """What one request may hold; `dualenc serve` sets each from a flag."""

    max_body_bytes: int = 1 << 20  # request body
    max_context_chars: int = 20_000  # characters of the context, all turns together
    max_turns: int = 100  # turns of a context given as a list
    max_candidates: int = 100  # candidates of one /rank request
    max_candidate_chars: int = 5_000  # characters of one candidate
    max_k: int = 100  # responses one /respond request may ask for


class RequestError(Exception):
    """A request that parsed but breaks a rule: answered with `status` and the message."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


# Requests and responses ---------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class RankRequest(_Strict):
    context: str | list[str] = Field(description="marker text, or the turns so far in order")
    candidates: list[str] = Field(description="the responses to rank")


class RespondRequest(_Strict):
    context: str | list[str] = Field(description="marker text, or the turns so far in order")
    k: int = Field(1, description="how many responses of the bank to return")


class Scored(BaseModel):
    text: str
    index: int = Field(description="position among the candidates, or row of the bank")
    logit: float = Field(description="c·M·r + b")
    probability: float = Field(description="sigmoid of the logit")


class RankResponse(BaseModel):
    ranked: list[Scored] = Field(description="every candidate, best first")


class RespondResponse(BaseModel):
    responses: list[Scored] = Field(description="the k best responses of the bank")


class Health(BaseModel):
    status: str
    bank_size: int | None = Field(description="responses in the bank; null without one")
    bank_kind: str | None
    encoding_dim: int


class ErrorBody(BaseModel):
    error: str


def check_context(context: str | list[str], limits: Limits) -> str | list[str]:
    """The context, if it is within the limits and not empty; else a RequestError."""
    turns = [context] if isinstance(context, str) else context
    if not isinstance(context, str) and len(turns) > limits.max_turns:
        raise RequestError(f"context: {len(turns)} turns, more than the limit of "
                           f"{limits.max_turns}")
    chars = sum(len(turn) for turn in turns)
    if chars > limits.max_context_chars:
        raise RequestError(f"context: {chars} characters, more than the limit of "
                           f"{limits.max_context_chars}")
    if not any(turn.strip() for turn in turns):
        raise RequestError("context: empty; send the dialog so far")
    return context


def check_rank(request: RankRequest, limits: Limits) -> tuple[str | list[str], list[str]]:
    """The context and candidates of a /rank request, checked against the limits."""
    context = check_context(request.context, limits)
    candidates = request.candidates
    if not candidates:
        raise RequestError("candidates: empty; send at least one response to rank")
    if len(candidates) > limits.max_candidates:
        raise RequestError(f"candidates: {len(candidates)}, more than the limit of "
                           f"{limits.max_candidates}")
    for i, text in enumerate(candidates):
        if not text.strip():
            raise RequestError(f"candidates[{i}]: empty")
        if len(text) > limits.max_candidate_chars:
            raise RequestError(f"candidates[{i}]: {len(text)} characters, more than the limit "
                               f"of {limits.max_candidate_chars}")
    return context, candidates


def check_respond(request: RespondRequest, limits: Limits) -> tuple[str | list[str], int]:
    """The context and k of a /respond request, checked against the limits."""
    if not 1 <= request.k <= limits.max_k:
        raise RequestError(f"k: {request.k}; it must be between 1 and {limits.max_k}")
    return check_context(request.context, limits), request.k


# The application ----------------------------------------------------------------------------


def create_app(ranker: Ranker, bank: ResponseBank | None = None, limits: Limits | None = None
               ) -> FastAPI:
    """The FastAPI application over a loaded ranker and, for /respond, a response bank."""
    limits = limits or Limits()
    lock = threading.Lock()  # one request at a time uses the CPU cores: no oversubscription
    app = FastAPI(
        title="dualenc",
        version=__version__,
        description="Response selection with a dual encoder (Lowe et al. 2015).",
    )
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    _add_error_handlers(app)
    errors: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorBody} for code in (400, 404, 413, 415, 422)
    }

    @app.get("/health", summary="liveness and what is loaded")
    def health() -> Health:
        size = len(bank) if bank is not None else None
        kind = bank.kind if bank is not None else None
        return Health(status="ok", bank_size=size, bank_kind=kind,
                      encoding_dim=ranker.encoding_dim)

    @app.post("/rank", responses=errors, summary="rank the given candidates for a context")
    def rank(request: RankRequest) -> RankResponse:
        context, candidates = check_rank(request, limits)
        with lock:
            ranked = ranker.rank(context, candidates)
        return RankResponse(ranked=[Scored(**asdict(c)) for c in ranked])

    @app.post("/respond", responses=errors, summary="the best responses of the bank")
    def respond(request: RespondRequest) -> RespondResponse:
        if bank is None:
            raise RequestError("no response bank is loaded: start the server with --index", 404)
        context, k = check_respond(request, limits)
        with lock:
            hits = bank.respond(ranker, context, k)
        return RespondResponse(responses=[Scored(**asdict(h)) for h in hits])

    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestError)
    async def request_error(request: Request, err: RequestError) -> JSONResponse:
        return JSONResponse({"error": str(err)}, status_code=err.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(err.detail)}, err.status_code, headers=err.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        status, message = _describe(err.errors(), request.headers.get("content-type", ""))
        return JSONResponse({"error": message}, status_code=status)


def _describe(errors: list[dict[str, Any]], content_type: str) -> tuple[int, str]:
    """Status and one message for pydantic's list of errors."""
    if any(e.get("type") == "json_invalid" for e in errors):
        reason = next(e for e in errors if e.get("type") == "json_invalid").get("ctx", {})
        return 400, f"malformed JSON: {reason.get('error', 'cannot be parsed')}"
    if any(e.get("type") == "missing" and tuple(e.get("loc", ())) == ("body",) for e in errors):
        return 400, "the request body is empty; send a JSON object"
    if "json" not in content_type.lower():
        return 415, "send the body as JSON, with Content-Type: application/json"
    parts = []
    for e in errors:
        where = ".".join(str(p) for p in e.get("loc", ())[1:]) or "body"
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    return 422, "; ".join(parts)


class BodyLimit:
    """ASGI middleware: a request body over `max_bytes` gets 413 before anything parses it,
    whether it declares its Content-Length or streams in chunks."""

    def __init__(self, app: Callable, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and not declared.strip().isdigit():
            return await _reply(send, 400, "Content-Length is not a number")
        if declared is not None and int(declared) > self.max_bytes:
            return await _reply(send, 413, self._too_big())
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await _reply(send, 413, self._too_big())
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)

    def _too_big(self) -> str:
        return f"the request body is over the limit of {self.max_bytes} bytes"


async def _reply(send: Send, status: int, message: str) -> None:
    body = JSONResponse({"error": message}).body
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# Running it ---------------------------------------------------------------------------------


def bind(host: str = "127.0.0.1", port: int = 8000) -> socket.socket:
    """A listening TCP socket; port 0 picks a free one (read it from getsockname)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


def make_server(app: FastAPI, log_level: str = "info", access_log: bool = False) -> Any:
    """A uvicorn server for `app`; run it with `server.run(sockets=[bind(...)])`."""
    import uvicorn

    config = uvicorn.Config(app, log_config=None, log_level=log_level, access_log=access_log)
    return uvicorn.Server(config)


def serve(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, access_log: bool = False
          ) -> None:
    """Serve `app` until interrupted."""
    sock = bind(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    log.info("serving on http://%s:%d (API documentation at /docs)", shown, bound)
    make_server(app, access_log=access_log).run(sockets=[sock])
