import contextlib
import dataclasses
import http.client
import json
import subprocess
import sys
import threading
import time

import pytest
from test_chat import BANK
from test_ranker import ONE_WORD, overlap_model, write_run

from dualenc.cli import build_parser
from dualenc.commands.serve import _DEFAULT_LIMITS, limit_settings
from dualenc.errors import DualencError
from dualenc.index import ResponseBank
from dualenc.ranker import Ranker
from dualenc.service import (
    Limits,
    RankRequest,
    RequestError,
    bind,
    check_rank,
    create_app,
    make_server,
)

LIMITS = Limits(max_body_bytes=4096, max_context_chars=300, max_turns=5, max_candidates=4,
                max_candidate_chars=100, max_k=3)
JSON = {"Content-Type": "application/json"}


@contextlib.contextmanager
def running(app):
    """The app on uvicorn in a background thread, on a free loopback port."""
    sock = bind("127.0.0.1", 0)
    server = make_server(app, log_level="warning")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started, "the server did not start"
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def request(port, method, path, body=None, headers=None, chunked=False):
    """(status, decoded JSON or text) of one HTTP request."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        data = body if isinstance(body, bytes | type(None)) else json.dumps(body).encode()
        if chunked:
            conn.request(method, path, body=iter([data[:100], data[100:]]),
                         headers=headers or JSON, encode_chunked=True)
        else:
            conn.request(method, path, body=data, headers=headers or JSON)
        reply = conn.getresponse()
        text = reply.read().decode()
        is_json = reply.getheader("content-type", "").startswith("application/json")
        return reply.status, json.loads(text) if is_json else text
    finally:
        conn.close()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("service")
    run = write_run(root / "run", overlap_model())
    ranker = Ranker.load(run)
    ResponseBank.build(ranker, BANK, kind="exact", progress=False).save(root / "bank")
    return ranker, run, root / "bank"


@pytest.fixture(scope="module")
def port(setup):
    ranker, _, index = setup
    with running(create_app(ranker, ResponseBank.load(index, ranker), LIMITS)) as port:
        yield port


def test_rank_and_respond_answer_the_obvious_case(setup, port):
    ranker = setup[0]
    candidates = ["reinstall grub", "try alsamixer for the sound", "hello"]
    status, out = request(port, "POST", "/rank",
                          {"context": "my sound is broken", "candidates": candidates})
    assert status == 200
    assert [r["index"] for r in out["ranked"]] == [1, 0, 2]  # shares "sound"; then ties
    assert out["ranked"][0]["logit"] == pytest.approx(ONE_WORD, abs=1e-3)
    in_process = ranker.rank("my sound is broken", candidates)
    assert out["ranked"] == [dataclasses.asdict(c) for c in in_process]

    status, out = request(port, "POST", "/respond",
                          {"context": ["my sound is broken", "sound and grub"], "k": 2})
    assert status == 200
    assert [r["text"] for r in out["responses"]] == [BANK[0], BANK[1]]  # sound twice, grub once
    status, out = request(port, "POST", "/respond", {"context": "reinstall grub"})
    assert (status, [r["index"] for r in out["responses"]]) == (200, [1])  # k defaults to 1


def test_health_and_the_api_documentation(port):
    assert request(port, "GET", "/health") == (200, {"status": "ok", "bank_size": 3,
                                                     "bank_kind": "exact", "encoding_dim": 16})
    status, page = request(port, "GET", "/docs")
    assert status == 200 and "swagger" in page.lower()
    status, spec = request(port, "GET", "/openapi.json")
    assert status == 200 and {"/rank", "/respond", "/health"} <= set(spec["paths"])


RANK = "/rank"
BAD_REQUESTS = {
    "malformed JSON": (RANK, b'{"context": "hi", "candidates": [', 400, "malformed JSON"),
    "empty body": (RANK, b"", 400, "request body is empty"),
    "not an object": (RANK, b"[1, 2]", 422, "body"),
    "missing field": (RANK, {"context": "hi"}, 422, "candidates: Field required"),
    "context of a wrong type": (RANK, {"context": 5, "candidates": ["a"]}, 422, "context"),
    "candidates not a list": (RANK, {"context": "hi", "candidates": "a"}, 422, "candidates"),
    "candidate not text": (RANK, {"context": "hi", "candidates": ["a", 1]}, 422,
                           "candidates.1: Input should be a valid string"),
    "unknown field": (RANK, {"context": "hi", "candidates": ["a"], "top": 1}, 422,
                      "top: Extra inputs are not permitted"),
    "empty candidates": (RANK, {"context": "hi", "candidates": []}, 422, "candidates: empty"),
    "empty candidate": (RANK, {"context": "hi", "candidates": ["a", " "]}, 422,
                        "candidates[1]: empty"),
    "empty context": (RANK, {"context": ["", " "], "candidates": ["a"]}, 422, "context: empty"),
    "too many candidates": (RANK, {"context": "hi", "candidates": list("abcde")}, 422,
                            "candidates: 5, more than the limit of 4"),
    "long candidate": (RANK, {"context": "hi", "candidates": ["a" * 101]}, 422,
                       "candidates[0]: 101 characters, more than the limit of 100"),
    "long context": (RANK, {"context": "a" * 301, "candidates": ["a"]}, 422,
                     "context: 301 characters, more than the limit of 300"),
    "too many turns": (RANK, {"context": list("abcdef"), "candidates": ["a"]}, 422,
                       "context: 6 turns, more than the limit of 5"),
    "k of zero": ("/respond", {"context": "hi", "k": 0}, 422, "k: 0; it must be between 1 and 3"),
    "k over the limit": ("/respond", {"context": "hi", "k": 4}, 422, "between 1 and 3"),
    "k as text": ("/respond", {"context": "hi", "k": "2"}, 422, "k: Input should be"),
    "body over the limit": (RANK, {"context": "a" * 5000, "candidates": ["a"]}, 413,
                            "over the limit of 4096 bytes"),
}


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=list(BAD_REQUESTS))
def test_bad_requests_get_a_4xx_with_a_json_error_and_the_server_goes_on(port, case):
    path, body, status, message = BAD_REQUESTS[case]
    got, out = request(port, "POST", path, body)
    assert got == status, out
    assert message in out["error"]
    assert request(port, "GET", "/health")[0] == 200


def test_other_malformed_requests(port):
    streamed = json.dumps({"context": "a" * 5000, "candidates": ["a"]}).encode()
    status, out = request(port, "POST", RANK, streamed, chunked=True)  # no Content-Length
    assert (status, out["error"]) == (413, "the request body is over the limit of 4096 bytes")
    body = json.dumps({"context": "hi", "candidates": ["a"]}).encode()
    status, out = request(port, "POST", RANK, body, headers={"Content-Type": "text/plain"})
    assert status == 415 and "application/json" in out["error"]
    assert request(port, "GET", RANK)[0] == 405
    assert request(port, "GET", "/nowhere") == (404, {"error": "Not Found"})
    assert request(port, "GET", "/health")[0] == 200


def test_respond_without_a_bank_is_a_clear_4xx(setup):
    with running(create_app(setup[0], None, LIMITS)) as port:
        status, out = request(port, "POST", "/respond", {"context": "hi"})
        assert status == 404 and "start the server with --index" in out["error"]
        assert request(port, "GET", "/health")[1]["bank_size"] is None


def test_requests_are_checked_without_http():
    request_ = RankRequest(context=["hi", "there"], candidates=["a", "b"])
    assert check_rank(request_, LIMITS) == (["hi", "there"], ["a", "b"])
    with pytest.raises(RequestError, match="candidates: 5"):
        check_rank(RankRequest(context="hi", candidates=list("abcde")), LIMITS)


def test_limits_come_from_defaults_a_config_file_and_flags(tmp_path):
    assert _DEFAULT_LIMITS == dataclasses.asdict(Limits())
    config = tmp_path / "limits.json"
    config.write_text(json.dumps({"max_k": 7, "max_turns": 9}))
    args = build_parser().parse_args(["serve", "--run", "r", "--config", str(config),
                                      "--max-turns", "3"])
    assert args.host == "127.0.0.1" and args.port == 8000
    assert limit_settings(args) == {**_DEFAULT_LIMITS, "max_k": 7, "max_turns": 3}
    config.write_text(json.dumps({"max_kay": 7, "max_k": 0}))
    with pytest.raises(DualencError, match="unknown limits max_kay"):
        limit_settings(args)
    config.write_text(json.dumps({"max_k": 0}))
    with pytest.raises(DualencError, match="max_k must be a positive integer"):
        limit_settings(args)


def test_serve_command_loads_once_and_listens_on_loopback(setup):
    _, run, index = setup
    proc = subprocess.Popen(
        [sys.executable, "-m", "dualenc", "serve", "--run", str(run), "--index", str(index),
         "--port", "0"],
        stderr=subprocess.PIPE, text=True,
    )
    try:
        line = ""
        while "serving on" not in line:
            line = proc.stderr.readline()
            assert line, "serve ended before it listened"
        address = line.split("http://")[1].split()[0]
        assert address.startswith("127.0.0.1:")
        status, out = request(int(address.split(":")[1]), "GET", "/health")
        assert status == 200 and out["bank_size"] == 3
    finally:
        proc.terminate()
        proc.wait(timeout=30)
