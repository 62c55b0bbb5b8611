"""The OpenAI-compatible backend against a fake server whose log-probs come from a tiny known
model, so that every expected distribution is computed by hand below."""

from __future__ import annotations

import json
import math
import re
import socket
import sqlite3
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from acealign.backends import BackendError
from acealign.backends.cache import ResponseCache, cache_key
from acealign.backends.estimates import (
    BoundaryTerm,
    boundary_term,
    first_token_distribution,
    parse_option,
    sampling_estimate,
)
from acealign.backends.http import JSONClient, error_message, retry_after
from acealign.backends.openai import OpenAIBackend
from acealign.scoring import ScoringRequest

# -- the fake model: the next token depends on the previous token's last character only ---------
DEFAULT = {"1": 0.4, "2": 0.3, "3": 0.2, "0": 0.05, " ": 0.05}
NEXT = {
    "1": {"0": 0.5, " ": 0.3, "\n": 0.2},  # after "1": a digit (continuation) half of the time
    "2": {" ": 0.6, "5": 0.25, "\n": 0.15},
    "3": {"\n": 0.9, "a": 0.1},  # a letter does not continue a number
    "0": {" ": 0.8, "5": 0.2},
}
# The chat model's first answer token; " 2" and "2" both name option 2.
CHAT_FIRST = {"3": 0.4, "1": 0.3, "2": 0.08, " 2": 0.07, "Answer": 0.06, "I": 0.04}
# Sampled answers: a request with seed s gets ANSWERS[(s + i) % 10] for its i-th answer.
ANSWERS = ["3", "Answer: 1", "2 or 3", "no idea", "3", "1", "I'd say 3", "9", "3.5", "2"]
PROMPT = "Q: How much?\nAnswer: "
KEY = "sk-test-very-secret-42"


def next_dist(prev: str) -> dict:
    return NEXT.get(prev[-1:], DEFAULT)


def top_k(dist: dict, k: int) -> dict:
    best = sorted(dist.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
    return {t: math.log(p) for t, p in best}


class FakeTokenizer:
    """id = ord(char) + 10, BOS = 1 added with special tokens; "10" is two tokens."""

    bos_token, eos_token, unk_token = "<s>", "</s>", None
    bos_token_id, eos_token_id, unk_token_id, pad_token_id = 1, 2, None, None

    def __call__(self, text, add_special_tokens=True):
        ids = [ord(c) + 10 for c in text]
        return {"input_ids": ([1] if add_special_tokens else []) + ids}


def fake_decode(i: int) -> str:
    return "" if i < 10 else chr(i - 10)


class State:
    def __init__(self):
        self.models = ["tiny"]
        self.hits = Counter()
        self.bodies = []
        self.auth = []
        self.fail = []  # (status, headers, message) answered before anything else
        self.no_logprobs = self.null_logprob = self.merge = False
        self.reject_n = self.ignore_n = False
        self.decode = fake_decode
        self.lock = threading.Lock()


def completion(state: State, body: dict) -> dict:
    prompt = body["prompt"]
    toks = [state.decode(i) for i in prompt] if isinstance(prompt, list) else (
        re.findall(r" \d|.", prompt, re.S) if state.merge else list(prompt))
    k = body["logprobs"]
    lps, tops = [None], [None]
    for i in range(1, len(toks)):
        d = next_dist(toks[i - 1])
        lps.append(math.log(d.get(toks[i], 1e-3)))
        tops.append(top_k(d, k))
    d = next_dist(toks[-1])
    gen = max(d, key=d.get)
    toks, lps, tops = toks + [gen], lps + [math.log(d[gen])], tops + [top_k(d, k)]
    if state.null_logprob:
        lps[-2] = None
    offsets = [sum(len(t) for t in toks[:i]) for i in range(len(toks))]
    logprobs = {"tokens": toks, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets}
    choice = {"index": 0, "text": "".join(toks), "finish_reason": "length"}
    if not state.no_logprobs:
        choice["logprobs"] = logprobs
    return {"object": "text_completion", "choices": [choice]}


def chat(state: State, body: dict):
    if body.get("logprobs"):
        top = top_k(CHAT_FIRST, body["top_logprobs"])
        first = next(iter(top))
        alts = [{"token": t, "logprob": lp} for t, lp in top.items()]
        return 200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": first},
                                  "logprobs": {"content": [{"token": first, "logprob": top[first],
                                                            "top_logprobs": alts}]}}]}
    n = body.get("n", 1)
    if state.reject_n and n > 1:
        return 400, {"error": {"message": "n must be 1\nfor this model", "type": "invalid_request"}}
    n = 1 if state.ignore_n else n
    seed = body.get("seed", len(state.bodies))  # unseeded: some other answer each call
    return 200, {"choices": [{"index": i, "message": {"role": "assistant",
                                                      "content": ANSWERS[(seed + i) % len(ANSWERS)]}}
                             for i in range(n)]}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # quiet
        pass

    def _send(self, status: int, obj, headers=None):
        data = json.dumps(obj).encode()
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _answer(self, body):
        state: State = self.server.state
        with state.lock:
            state.hits[self.path] += 1
            state.auth.append(self.headers.get("Authorization"))
            if body is not None:
                state.bodies.append(body)
            fail = state.fail.pop(0) if state.fail else None
        if fail:
            status, headers, msg = fail
            return self._send(status, {"error": {"message": msg}}, headers)
        if self.path == "/v1/models":
            return self._send(200, {"object": "list", "data": [{"id": m} for m in state.models]})
        if self.path == "/v1/completions":
            return self._send(200, completion(state, body))
        if self.path == "/v1/chat/completions":
            return self._send(*chat(state, body))
        self._send(404, {"error": {"message": f"no route {self.path}"}})

    def do_GET(self):
        self._answer(None)

    def do_POST(self):
        self._answer(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))


@pytest.fixture()
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.state = State()
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    t.start()
    httpd.state.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    yield httpd.state
    httpd.shutdown()
    httpd.server_close()


def backend(state, **kw):
    kw.setdefault("sleep", lambda s: None)
    return OpenAIBackend(state.url, **kw)


def req(options=("1", "2", "3"), prompt=PROMPT, **kw):
    return ScoringRequest(prompt, tuple(options), **kw)


# -- pure estimators -----------------------------------------------------------------------------
@pytest.mark.parametrize("text, want", [
    ("3", 2), ("Answer: 3", 2), ("I'd say 10", 9), ("none", None), ("2 or 3", 1),
    ("", None), ("3.5", None), ("It is 3.", 2), ("Q7: 4", 6), ("Q12: 4", 3), ("010", 9),
])
def test_parse_option(text, want):
    options = [str(i) for i in range(1, 11)]
    assert parse_option(text, options) == want


def test_boundary_term_by_hand():
    # After "1": "0" continues (0.5), " " stops (0.3); 0.2 is outside the top 2.
    t = boundary_term({"0": math.log(0.5), " ": math.log(0.3)}, "1")
    assert t.stop_log_prob == pytest.approx(math.log(0.5))
    assert t.gap == pytest.approx(math.log(0.5 / 0.3))
    full = boundary_term({"0": math.log(0.5), " ": math.log(0.3), "\n": math.log(0.2)}, "1")
    assert full.stop_log_prob == pytest.approx(math.log(0.5)) and full.gap == pytest.approx(0, abs=1e-12)
    only_cont = boundary_term({"0": math.log(0.5)}, "1")
    assert only_cont.stop_log_prob == pytest.approx(math.log(0.5)) and only_cont.gap == math.inf
    # Nothing can continue "Agree." (no letter/digit at its end, no longer option): exactly 0.
    assert boundary_term({"!": math.log(0.9)}, "Agree.") == BoundaryTerm(0.0, 0.0)
    # A longer option's remainder continues: "," after "Agree" (", strongly").
    opts = ["Agree", "Agree, strongly"]
    t = boundary_term({",": math.log(0.4), ".": math.log(0.6)}, "Agree", opts)
    assert t.stop_log_prob == pytest.approx(math.log(0.6)) and t.gap == pytest.approx(0, abs=1e-12)


def test_boundary_term_is_accurate_when_the_answer_almost_surely_goes_on():
    eps = 1e-13
    t = boundary_term({"0": math.log1p(-eps), " ": math.log(eps)}, "1")
    assert t.stop_log_prob == pytest.approx(math.log(eps), rel=1e-3)
    assert t.gap == pytest.approx(0, abs=1e-3)


def test_first_token_distribution_by_hand():
    top = [("3", math.log(0.4)), ("1", math.log(0.3)), ("2", math.log(0.08)), (" 2", math.log(0.07))]
    p, covered = first_token_distribution(top, ["1", "2", "3"])
    np.testing.assert_allclose(p, [0.3 / 0.85, 0.15 / 0.85, 0.4 / 0.85])
    assert covered == pytest.approx(0.85)
    with pytest.raises(BackendError, match=r"\['4'\].*not among the 4 returned.*question X"):
        first_token_distribution(top, ["1", "4"], "question X")


def test_sampling_estimate_by_hand():
    p, info = sampling_estimate(["1", "x", "1", "2", "nope"], ["1", "2"])
    np.testing.assert_allclose(p, [2 / 3, 1 / 3])
    assert info["samples"] == 5 and info["parsed"] == 3 and info["unparseable"] == pytest.approx(0.4)
    np.testing.assert_allclose(info["se"], [math.sqrt(2 / 9 / 3)] * 2)
    with pytest.raises(BackendError, match="none of 2 sampled answers.*question Q"):
        sampling_estimate(["no", "idea"], ["1", "2"], "question Q")


def test_http_helpers():
    assert error_message(b'{"error": {"message": "bad\\n  request"}}') == "bad request"
    assert error_message(b'{"detail": "nope"}') == "nope"
    assert error_message(b"x" * 500, limit=10) == "xxxxxxx..."
    assert retry_after("2") == 2.0 and retry_after(None) is None and retry_after("soon") is None
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past


# -- prompt-logprobs -----------------------------------------------------------------------------
def test_prompt_logprobs_literal_and_whole(server):
    literal = backend(server, mode="literal").score([req()])[0]
    np.testing.assert_allclose(literal.dist, [0.4 / 0.9, 0.3 / 0.9, 0.2 / 0.9], rtol=1e-12)
    assert literal.info == {}
    # whole: p(option) x P(stop after it) = .4 x .5, .3 x .75, .2 x 1 -> / .625
    whole = backend(server, top_logprobs=5).score([req()])[0]
    np.testing.assert_allclose(whole.dist, [0.32, 0.36, 0.32], rtol=1e-12)
    assert whole.dist.dtype == np.float64 and whole.dist.sum() == pytest.approx(1, abs=1e-15)
    assert whole.info["boundary_gap"] == pytest.approx(0, abs=1e-12)  # every top-k is complete
    sent = server.bodies[-1]
    assert {b["prompt"] for b in server.bodies[-3:]} == {PROMPT + o for o in "123"}
    assert sent["echo"] is True and sent["max_tokens"] == 1
    assert sent["logprobs"] == 5 and sent["temperature"] == 1.0 and sent["top_p"] == 1


def test_prompt_logprobs_boundary_gap_from_a_truncated_top_k(server):
    # top 2: after "1" {"0" .5, " " .3}: stop .5, gap log(.5/.3); after "2" {" " .6, "5" .25}:
    # stop .75, gap log(.75/.6); after "3" {"\n" .9, "a" .1}: complete.
    got = backend(server, top_logprobs=2).score([req()])[0]
    np.testing.assert_allclose(got.dist, [0.32, 0.36, 0.32], rtol=1e-12)
    assert got.info["boundary_gap"] == pytest.approx(math.log(0.5 / 0.3))
    # top 1: after "1" only "0" (continues): N = 0, gap inf; after "2" only " ": stop taken as 1.
    got = backend(server, top_logprobs=1).score([req()])[0]
    np.testing.assert_allclose(got.dist, [0.2 / 0.7, 0.3 / 0.7, 0.2 / 0.7], rtol=1e-12)
    assert got.info["boundary_gap"] == math.inf


def test_prompt_logprobs_multi_token_options(server):
    # literal: "1" .4, "10" .4 x .5; whole: .4 x .5 (after "1" a digit goes on), .2 x .8
    literal = backend(server, mode="literal").score([req(("1", "10"))])[0]
    np.testing.assert_allclose(literal.dist, [2 / 3, 1 / 3], rtol=1e-12)
    whole = backend(server).score([req(("1", "10"))])[0]
    np.testing.assert_allclose(whole.dist, [5 / 9, 4 / 9], rtol=1e-12)


def test_prompt_logprobs_scale_order_and_concurrency(server):
    b = backend(server, mode="literal", concurrency=3)
    reqs = [req(("3", "2", "1")), req(("1", "2", "3", "8"), scale=(0, 1, 2)), req(("2", "3"))]
    got = b.score(reqs)
    np.testing.assert_allclose(got[0].dist, [2 / 9, 3 / 9, 4 / 9], rtol=1e-12)
    np.testing.assert_allclose(got[1].dist, [4 / 9, 3 / 9, 2 / 9], rtol=1e-12)
    np.testing.assert_allclose(got[2].dist, [0.6, 0.4], rtol=1e-12)
    assert server.hits["/v1/completions"] == 8  # the off-scale "8" is never asked


def test_prompt_logprobs_with_token_ids(server):
    b = backend(server, tokenizer=FakeTokenizer(), top_logprobs=5)
    got = b.score([req(), req(prompt="<s>" + PROMPT)])
    for g in got:
        np.testing.assert_allclose(g.dist, [0.32, 0.36, 0.32], rtol=1e-12)
    ids = [b["prompt"] for b in server.bodies if "prompt" in b]
    plain = [1] + [ord(c) + 10 for c in PROMPT]
    assert plain + [ord("2") + 10] in ids  # BOS added, option without special tokens
    assert [ord(c) + 10 for c in "<s>" + PROMPT] + [ord("2") + 10] in ids  # no second BOS
    assert b.tokenizer is not None and b.describe()["tokenization"] == "client:FakeTokenizer"


def test_prompt_logprobs_with_a_real_tokenizer(server):
    from acealign.testing import tiny_tokenizer

    tok = tiny_tokenizer(chat=False)
    server.decode = lambda i: "" if i < 4 else tok.convert_ids_to_tokens(i)
    got = backend(server, tokenizer=tok, concurrency=4).score([req(("1", "10"))] * 3)
    for g in got:
        np.testing.assert_allclose(g.dist, [5 / 9, 4 / 9], rtol=1e-12)
    want = tok(PROMPT)["input_ids"] + tok("10", add_special_tokens=False)["input_ids"]
    assert want in [b["prompt"] for b in server.bodies]


def test_prompt_logprobs_merged_boundary_is_an_error(server):
    server.merge = True  # the server's tokenizer makes " 1" one token
    with pytest.raises(BackendError, match="merges the end of the prompt"):
        backend(server).score([req(prompt="Answer: ")])


def test_no_logprobs_is_an_error_not_a_zero(server):
    server.no_logprobs = True
    with pytest.raises(BackendError, match="no prompt log-probabilities for option '1'"):
        backend(server).score([req()])
    server.no_logprobs, server.null_logprob = False, True
    with pytest.raises(BackendError, match="no prompt log-probabilities"):
        backend(server, mode="literal").score([req()])


# -- first-token ---------------------------------------------------------------------------------
def test_first_token_by_hand(server):
    b = backend(server, estimator="first-token", top_logprobs=5)
    assert b.tokenizer is None
    messages = (("system", "Be brief."), ("user", "How much? Pick 1, 2 or 3."))
    got = b.score([req(messages=messages)])[0]
    # "1" .3, "2" .08 + " 2" .07, "3" .4 -> / .85
    np.testing.assert_allclose(got.dist, [0.3 / 0.85, 0.15 / 0.85, 0.4 / 0.85], rtol=1e-12)
    assert got.info == {"covered_mass": pytest.approx(0.85)}
    sent = server.bodies[-1]
    assert sent["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "How much? Pick 1, 2 or 3."}]
    assert sent["max_tokens"] == 1 and sent["logprobs"] is True and sent["top_logprobs"] == 5
    assert sent["temperature"] == 1.0


def test_first_token_option_outside_the_top_k_is_an_error(server):
    b = backend(server, estimator="first-token", top_logprobs=2)
    with pytest.raises(BackendError, match=r"\['2'\] of \['1', '2', '3'\].*How much\?"):
        b.score([req()])
    assert server.bodies[-1]["messages"] == [{"role": "user", "content": PROMPT}]


def test_first_token_multi_token_option_is_an_error(server):
    b = backend(server, estimator="first-token", tokenizer=FakeTokenizer())
    with pytest.raises(BackendError, match=r"\['10'\].*not single tokens.*How much"):
        b.score([req(("1", "10"))])
    assert server.hits["/v1/chat/completions"] == 0


# -- sampling ------------------------------------------------------------------------------------
SAMPLED = [2 / 7, 2 / 7, 3 / 7]  # ANSWERS: "1" x2, "2" x2, "3" x3, 3 name no option


def check_sampled(got):
    np.testing.assert_allclose(got.dist, SAMPLED, rtol=1e-12)
    assert got.info["samples"] == 10 and got.info["parsed"] == 7
    assert got.info["unparseable"] == pytest.approx(0.3)
    np.testing.assert_allclose(got.info["se"], [math.sqrt(p * (1 - p) / 7) for p in SAMPLED])


def test_sampling_by_hand(server):
    b = backend(server, estimator="sampling", samples=10, seed=3)
    check_sampled(b.score([req()])[0])
    sent = server.bodies[-1]
    assert sent["n"] == 10 and sent["temperature"] == 1.0 and sent["max_tokens"] <= 16
    seed = sent["seed"]
    backend(server, estimator="sampling", samples=10, seed=3).score([req()])
    assert server.bodies[-1]["seed"] == seed  # reproducible
    backend(server, estimator="sampling", samples=10, seed=4).score([req()])
    assert server.bodies[-1]["seed"] == seed + 1
    assert backend(server, estimator="sampling", samples=10, seed=3).describe()["samples"] == 10


@pytest.mark.parametrize("flag", ["reject_n", "ignore_n"])
def test_sampling_falls_back_to_one_answer_per_call(server, flag):
    setattr(server, flag, True)
    b = backend(server, estimator="sampling", samples=10, seed=0)
    check_sampled(b.score([req()])[0])
    seeds = sorted(x["seed"] for x in server.bodies if x.get("n") == 1)
    assert len(seeds) == (10 if flag == "reject_n" else 9) and len(set(seeds)) == len(seeds)
    if flag == "reject_n":
        before = server.hits["/v1/chat/completions"]
        check_sampled(b.score([req(prompt="Other: ")])[0])  # n > 1 is not tried again
        assert server.hits["/v1/chat/completions"] == before + 10


def test_sampling_sends_no_seed_unless_asked(server, tmp_path):
    b = backend(server, estimator="sampling", samples=10, cache_path=tmp_path / "c.sqlite")
    assert "seed" not in b.describe() or b.describe()["seed"] is None
    server.reject_n = True
    b.score([req()])
    calls = [x for x in server.bodies if x.get("n") == 1]
    assert len(calls) == 10 and not any("seed" in x for x in calls)
    # ten identical unseeded calls are ten draws, not one cached answer repeated
    assert len(b._cache) == 10


def test_sampling_without_any_parseable_answer_is_an_error(server):
    b = backend(server, estimator="sampling", samples=10, seed=0)
    with pytest.raises(BackendError, match="none of 10 sampled answers.*'7', '8'.*How much"):
        b.score([req(("7", "8"))])


# -- HTTP: retries, errors, server checks, API key, cache ----------------------------------------
def test_429_is_retried_after_the_servers_wait(server):
    sleeps = []
    b = backend(server, mode="literal", sleep=sleeps.append)
    server.fail = [(429, {"Retry-After": "3"}, "slow down")]
    got = b.score([req(("1",))])[0]
    assert got.dist.tolist() == [1.0] and sleeps == [3.0]
    assert server.hits["/v1/completions"] == 2


def test_500_past_max_retries_is_an_error(server):
    sleeps = []
    b = backend(server, max_retries=2, sleep=sleeps.append)
    server.fail = [(500, {}, "boom")] * 3
    with pytest.raises(BackendError, match="HTTP 500 after 3 attempts: boom"):
        b.score([req(("1",))])
    assert server.hits["/v1/completions"] == 3 and len(sleeps) == 2
    assert sleeps[0] < sleeps[1] <= 60  # exponential backoff


def test_other_4xx_is_not_retried(server):
    b = backend(server)
    server.fail = [(400, {}, "max_tokens too large\nsee docs")]
    with pytest.raises(BackendError, match="HTTP 400: max_tokens too large see docs$"):
        b.score([req(("1",))])
    assert server.hits["/v1/completions"] == 1


def test_unreachable_server():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(BackendError, match=f"cannot reach http://127.0.0.1:{port}/v1/models"):
        OpenAIBackend(f"http://127.0.0.1:{port}/v1/", sleep=lambda s: None)


def test_models(server):
    server.models = ["tiny-a", "tiny-b"]
    with pytest.raises(BackendError, match="'nope' is not served .*tiny-a, tiny-b"):
        backend(server, model="nope")
    with pytest.raises(BackendError, match="serves 2 models"):
        backend(server)
    assert backend(server, model="tiny-b").model == "tiny-b"
    server.models = ["tiny-a"]
    b = OpenAIBackend(server.url + "/")  # trailing slash
    assert b.model == "tiny-a" and b.describe()["base_url"] == server.url


def test_api_key_is_sent_but_never_shown(server, monkeypatch, tmp_path):
    with pytest.raises(BackendError, match="ACEALIGN_TEST_KEY"):
        backend(server, api_key_env="ACEALIGN_TEST_KEY")
    monkeypatch.setenv("ACEALIGN_TEST_KEY", KEY)
    cache = tmp_path / "cache.sqlite"
    b = backend(server, api_key_env="ACEALIGN_TEST_KEY", cache_path=cache)
    b.score([req()])
    assert set(server.auth) == {f"Bearer {KEY}"}
    assert KEY not in json.dumps(b.describe()) and KEY not in repr(vars(b))
    server.fail = [(401, {}, "invalid key")]
    with pytest.raises(BackendError) as e:
        b.score([req(("4",))])
    assert KEY not in str(e.value)
    b._cache.close()
    with sqlite3.connect(cache) as db:
        rows = db.execute("SELECT key, response FROM responses").fetchall()
    assert rows and not any(KEY in k or KEY in r for k, r in rows)
    assert KEY.encode() not in b"".join(p.read_bytes() for p in tmp_path.iterdir())


def test_cache_makes_a_rerun_free(server, tmp_path):
    cache = tmp_path / "c.sqlite"
    reqs = [req(), req(("1", "10"), prompt="Other: ")]
    first = backend(server, cache_path=cache, concurrency=2).score(reqs)
    calls = server.hits["/v1/completions"]
    assert calls == 5
    again = backend(server, cache_path=cache, concurrency=2).score(reqs)
    assert server.hits["/v1/completions"] == calls
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a.dist, b.dist)
        assert a.info == b.info
    # Another sampling parameter is another key.
    backend(server, cache_path=cache, top_logprobs=3).score(reqs)
    assert server.hits["/v1/completions"] == 2 * calls


def test_unusable_responses_are_not_cached(server, tmp_path):
    cache = tmp_path / "c.sqlite"
    server.no_logprobs = True
    with pytest.raises(BackendError):
        backend(server, cache_path=cache, concurrency=1).score([req(("1",))])
    server.no_logprobs = False
    assert backend(server, cache_path=cache).score([req(("1",))])[0].dist.tolist() == [1.0]
    assert server.hits["/v1/completions"] == 2


def test_response_cache_roundtrip(tmp_path):
    c = ResponseCache(tmp_path / "sub" / "c.sqlite")
    k = cache_key("http://h/v1/", "completions", "m", {"prompt": "x", "temperature": 1.0})
    assert k == cache_key("http://h/v1", "completions", "m", {"temperature": 1.0, "prompt": "x"})
    assert k != cache_key("http://h/v1", "completions", "m", {"temperature": 0.5, "prompt": "x"})
    assert c.get(k) is None
    c.put(k, {"choices": [1]})
    assert c.get(k) == {"choices": [1]} and len(c) == 1
    c.close()
    with sqlite3.connect(tmp_path / "sub" / "c.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_client_retries_connection_errors(server):
    sleeps = []
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    client = JSONClient(f"http://127.0.0.1:{port}/v1", max_retries=2, sleep=sleeps.append)
    with pytest.raises(BackendError, match="cannot reach"):
        client.post("completions", {})
    assert len(sleeps) == 2


def test_describe(server):
    d = backend(server, top_logprobs=7).describe()
    assert d == {"backend": "openai", "base_url": server.url, "model": "tiny",
                 "estimator": "prompt-logprobs", "scoring_mode": "whole",
                 "tokenization": "server", "top_logprobs": 7}
    assert "top_logprobs" not in backend(server, mode="literal").describe()
    with pytest.raises(BackendError, match="unknown estimator"):
        backend(server, estimator="exact")
