"""Scoring backend for any OpenAI-compatible server (``vllm serve``, llama.cpp's server, hosted
APIs), with three estimators (see :mod:`acealign.backends`):

- ``prompt-logprobs`` (``/completions``): one call per option with ``echo`` on, prompt + option
  as the prompt, ``max_tokens=1``: Eq. 2 is the sum of the option tokens' echoed log-probs; in
  mode ``whole`` the whole-answer term comes from the top-k next-token log-probs after the option
  (:func:`acealign.backends.estimates.boundary_term`: tokens outside the top k are taken NOT to
  continue the option; ``info["boundary_gap"]`` bounds the error of any option's
  log-likelihood). With a ``tokenizer`` the prompt goes as token ids, tokenized exactly as the
  ``hf`` engine does (:class:`acealign.scoring.OptionScorer`); without one as text, the option's
  tokens located through ``text_offset``.
- ``first-token`` (``/chat/completions``): the first answer token's top-k log-probs; every
  option of the scale one token and among the returned alternatives, else an error. It scores
  the first token only, so the scoring mode does not change it.
- ``sampling`` (``/chat/completions``): ``samples`` answers at temperature 1 parsed to an option
  (:func:`acealign.backends.estimates.parse_option`); whole numbers are parsed, so "10" never
  counts as "1".

Chat estimators send the requests' ``messages`` and the server applies its own chat template,
so :attr:`OpenAIBackend.tokenizer` is ``None`` for them (the tokenizer given only checks that
options are single tokens). Every estimator works over the request's scale only (Eq. 3).
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch

from ..scoring import SCORING_MODES, ScoringRequest, encode_option, encode_prompt, renormalize
from . import BackendError, Scored, normalized
from .cache import ResponseCache, cache_key
from .estimates import boundary_term, first_token_distribution, sampling_estimate
from .http import HTTPStatusError, JSONClient, redacted_url

OPENAI_ESTIMATORS = ("prompt-logprobs", "first-token", "sampling")
SAMPLE_MAX_TOKENS = 8
_SEED_RANGE = 2**31 - 2**20  # leaves room for the seeds of the one-answer fallback


def _api_key(env: str | None) -> str | None:
    if env is None:
        return None
    key = os.environ.get(env)
    if not key:
        raise BackendError(f"environment variable {env} (the API key) is not set")
    return key


def _snippet(request: ScoringRequest) -> str:
    """The question as an error shows it: the last message (or the prompt), first 60 characters."""
    text = request.messages[-1][1] if request.messages else request.prompt
    return f"question {text[:60]!r}"


def _scale(i: int, r: ScoringRequest) -> list[int]:
    if not r.options:
        raise BackendError(f"request {i} has no options")
    scale = list(range(len(r.options))) if r.scale is None else list(r.scale)
    if not scale or any(not 0 <= k < len(r.options) for k in scale):
        raise BackendError(f"request {i}: scale {r.scale} does not index its {len(r.options)} options")
    return scale


class OpenAIBackend:
    """Scores :class:`acealign.scoring.ScoringRequest` through an OpenAI-compatible server (module
    docstring). At construction, asks ``{base_url}/models`` which models it serves.

    ``base_url``: ends in ``/v1``. ``model``: ``None`` takes the one model served. ``api_key_env``:
    name of the environment variable holding the key (sent as a Bearer token, never shown).
    ``top_logprobs``: alternatives asked for per position; ``samples``: answers per request for
    ``sampling``; ``concurrency``: HTTP calls in flight; ``cache_path``: SQLite response cache
    (:class:`acealign.backends.cache.ResponseCache`; ``None``: none); ``max_retries``: retries of
    a call on 429/5xx/connection errors; ``seed``: added to a hash of each prompt as the sampling
    seed (None: no seed is sent; vLLM 0.32's CPU engine fails on seeded requests whose prompts
    are prefilled in chunks); ``sleep``: the backoff's sleep (tests inject one).
    """

    name = "openai"

    def __init__(self, base_url: str, model: str | None = None, api_key_env: str | None = None,
                 estimator: str = "prompt-logprobs", mode: str = "whole", tokenizer=None,
                 top_logprobs: int = 20, samples: int = 50, concurrency: int = 4,
                 cache_path=None, timeout: float = 60.0, max_retries: int = 5, seed: int | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        if estimator not in OPENAI_ESTIMATORS:
            raise BackendError(f"unknown estimator {estimator!r} for the openai backend "
                               f"(expected one of {', '.join(OPENAI_ESTIMATORS)})")
        if mode not in SCORING_MODES:
            raise BackendError(f"unknown scoring mode {mode!r} "
                               f"(expected one of {', '.join(SCORING_MODES)})")
        for label, v in (("top_logprobs", top_logprobs), ("samples", samples),
                         ("concurrency", concurrency)):
            if v < 1:
                raise BackendError(f"{label} must be >= 1, got {v}")
        self.estimator, self.mode = estimator, mode
        self.top_logprobs, self.samples, self.seed = top_logprobs, samples, seed
        self.concurrency = concurrency
        self.base_url = base_url.rstrip("/")
        self._client = JSONClient(self.base_url, _api_key(api_key_env), timeout=timeout,
                                  max_retries=max_retries, sleep=sleep)
        self.model = self._served_model(model)
        self._cache = ResponseCache(cache_path) if cache_path is not None else None
        self._checker = tokenizer
        self._single: dict[str, bool] = {}
        self.tokenizer = tokenizer if estimator == "prompt-logprobs" else None
        self._n_accepted = True  # cleared when the server rejects n > 1

    def _served_model(self, model: str | None) -> str:
        got = self._client.get("models", retry_connection=False)  # a wrong URL fails at once
        data = got.get("data") if isinstance(got, dict) else None
        served = [m.get("id") for m in data or [] if isinstance(m, dict)]
        listed = ", ".join(map(str, served)) or "none listed"
        where = redacted_url(self.base_url)
        if model is None:
            if len(served) != 1:
                raise BackendError(f"{where} serves {len(served)} models ({listed}): pass the model name")
            return served[0]
        if model not in served:
            raise BackendError(f"model {model!r} is not served at {where} (it serves: {listed})")
        return model

    def describe(self) -> dict:
        """Backend, server, model, estimator, scoring mode and the estimator's parameters (goes
        into the scoring fingerprint; never the API key)."""
        d = {"backend": self.name, "base_url": redacted_url(self.base_url), "model": self.model,
             "estimator": self.estimator, "scoring_mode": self.mode}
        if self.estimator == "prompt-logprobs":
            tok = self.tokenizer
            name = tok is not None and (getattr(tok, "name_or_path", "") or type(tok).__name__)
            d["tokenization"] = f"client:{name}" if name else "server"
            if self.mode == "whole":
                d["top_logprobs"] = self.top_logprobs
        elif self.estimator == "first-token":
            d.update(top_logprobs=self.top_logprobs, temperature=1.0)
        else:
            d.update(samples=self.samples, temperature=1.0, max_tokens=SAMPLE_MAX_TOKENS, seed=self.seed)
        return d

    # -- scoring ---------------------------------------------------------------------------------
    def score(self, requests: Sequence[ScoringRequest]) -> list[Scored]:
        """One :class:`Scored` per request, in order (HTTP calls run ``concurrency`` at a time)."""
        scales = [_scale(i, r) for i, r in enumerate(requests)]
        if self.estimator == "prompt-logprobs":
            return self._score_prompt_logprobs(requests, scales)
        if self.estimator == "first-token":
            for r, s in zip(requests, scales, strict=True):
                self._check_single_tokens(r, s)
            return self._map(self._first_token, list(zip(requests, scales, strict=True)))
        return self._map(self._sampled, list(zip(requests, scales, strict=True)))

    def _map(self, fn, items: list) -> list:
        if self.concurrency == 1 or len(items) <= 1:
            return [fn(x) for x in items]
        pool = ThreadPoolExecutor(self.concurrency)
        try:
            return list(pool.map(fn, items))  # in the order of items
        finally:
            pool.shutdown(cancel_futures=True)  # after an error, start no more calls

    def _call(self, endpoint: str, payload: dict, parse, draw: int | None = None):
        """POST ``payload`` (or take the cached response) and ``parse`` it; a response is cached
        only once it parsed, so an unusable one is asked again next time. ``draw``: which of
        several identical unseeded sampling calls this is (part of the cache key only)."""
        if self._cache is None:
            return parse(self._client.post(endpoint, payload))
        key = cache_key(self.base_url, endpoint, self.model,
                        payload if draw is None else {**payload, "acealign_draw": draw})
        got = self._cache.get(key)
        if got is not None:
            return parse(got)
        response = self._client.post(endpoint, payload)
        out = parse(response)
        self._cache.put(key, response)
        return out

    # -- prompt-logprobs -------------------------------------------------------------------------
    def _score_prompt_logprobs(self, requests, scales) -> list[Scored]:
        # Tokenized here, not in the workers: a fast tokenizer is not safe across threads.
        jobs = [(r, k, *self._completion_prompt(r, k)) for r, s in zip(requests, scales, strict=True)
                for k in s]
        results = iter(self._map(self._option_score, jobs))
        out = []
        for s in scales:
            got = [next(results) for _ in s]
            lls = torch.tensor([ll for ll, _ in got], dtype=torch.float64)
            p = normalized(renormalize(lls).exp().numpy())
            info = {"boundary_gap": max(gap for _, gap in got)} if self.mode == "whole" else {}
            out.append(Scored(p, info))
        return out

    def _completion_prompt(self, r: ScoringRequest, k: int):
        """(prompt field, [start, end) of the option's tokens or None): token ids as the hf engine
        tokenizes them (prompt with special tokens unless it starts with BOS, option without,
        concatenated) when there is a tokenizer, else the text (option located by text_offset)."""
        if self.tokenizer is None:
            return r.prompt + r.options[k], None
        # the hf engine's own tokenization (acealign.scoring), so that the ids match
        ids = encode_prompt(self.tokenizer, r.prompt)
        opt = encode_option(self.tokenizer, r.options[k])
        return ids + list(opt), (len(ids), len(ids) + len(opt))

    def _option_score(self, job) -> tuple[float, float]:
        """(log-likelihood of option k: Eq. 2 + the whole-answer term in mode whole, its gap)."""
        r, k, prompt, span = job
        option = r.options[k]
        what = f"option {option!r} of {_snippet(r)}"
        payload = {"model": self.model, "prompt": prompt, "echo": True, "max_tokens": 1,
                   # literal mode reads no alternatives: 1 keeps the echoed answer small
                   "logprobs": self.top_logprobs if self.mode == "whole" else 1,
                   "temperature": 1.0, "top_p": 1}

        def parse(response):
            lp = _legacy_logprobs(response, what)
            start, end = span or _text_span(lp, len(r.prompt), len(r.prompt) + len(option), what)
            ll = _sum_logprobs(lp["token_logprobs"], start, end, what)
            if self.mode != "whole":
                return ll, 0.0
            top = (lp.get("top_logprobs") or [])[end:end + 1]
            if not top or not isinstance(top[0], dict) or not top[0]:
                raise BackendError(f"server returned no next-token log-probabilities after {what}")
            term = boundary_term(top[0], option, r.options)
            return ll + term.stop_log_prob, term.gap

        return self._call("completions", payload, parse)

    # -- first-token -----------------------------------------------------------------------------
    def _check_single_tokens(self, r: ScoringRequest, scale: list[int]) -> None:
        if self._checker is None:
            return  # checked against the returned alternatives instead
        options = [r.options[k] for k in scale]
        for o in options:
            if o not in self._single:  # memo: a vocabulary lookup per option text, not per request
                self._single[o] = _single_token(self._checker, o)
        multi = [o for o in options if not self._single[o]]
        if multi:
            raise BackendError(f"first-token estimate: option(s) {multi} of {options} are not single "
                               f"tokens (use prompt-logprobs or sampling); {_snippet(r)}")

    def _messages(self, r: ScoringRequest) -> list[dict]:
        msgs = r.messages if r.messages else (("user", r.prompt),)
        return [{"role": role, "content": content} for role, content in msgs]

    def _first_token(self, item) -> Scored:
        r, scale = item
        options = [r.options[k] for k in scale]
        payload = {"model": self.model, "messages": self._messages(r), "max_tokens": 1,
                   "logprobs": True, "top_logprobs": self.top_logprobs, "temperature": 1.0}

        def parse(response):
            top = _first_token_top(response, _snippet(r))
            p, covered = first_token_distribution(top, options, _snippet(r))
            return Scored(p, {"covered_mass": covered})

        return self._call("chat/completions", payload, parse)

    # -- sampling --------------------------------------------------------------------------------
    def _prompt_seed(self, r: ScoringRequest) -> int | None:
        if self.seed is None:
            return None
        h = int.from_bytes(hashlib.sha256(r.prompt.encode()).digest()[:8], "big")
        return (self.seed + h) % _SEED_RANGE

    def _sampled(self, item) -> Scored:
        r, scale = item
        base = {"model": self.model, "messages": self._messages(r),
                "max_tokens": SAMPLE_MAX_TOKENS, "temperature": 1.0}
        seed = self._prompt_seed(r)

        def seeded(i: int) -> dict:
            return {} if seed is None else {"seed": seed + i}

        answers: list[str] = []
        if self._n_accepted and self.samples > 1:
            try:
                answers = self._call("chat/completions", {**base, "n": self.samples, **seeded(0)},
                                     _answers)[: self.samples]
            except HTTPStatusError as e:
                if not 400 <= e.status < 500:
                    raise
                self._n_accepted = False  # e.g. "n must be 1": one answer per call from now on
        # A server that rejects or ignores n > 1: answer i from its own call with seed + i.
        for i in range(len(answers), self.samples):
            answers += self._call("chat/completions", {**base, "n": 1, **seeded(i)}, _answers, draw=i)[:1]
        p, info = sampling_estimate(answers, [r.options[k] for k in scale], _snippet(r))
        return Scored(normalized(p), info)


def _single_token(tokenizer, option: str) -> bool:
    """Is ``option`` one token: it encodes to one, or (SentencePiece and byte-level BPE encode a
    lone "3" as "\u2581" + "3") the vocabulary has it, bare or with a leading-space marker."""
    if len(tokenizer(option, add_special_tokens=False)["input_ids"]) == 1:
        return True
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    return any(m + option in vocab for m in ("", "\u2581", "\u0120"))


# -- response parsing ----------------------------------------------------------------------------
def _choice(response, what: str) -> dict:
    choices = response.get("choices") if isinstance(response, dict) else None
    if not choices or not isinstance(choices[0], dict):
        raise BackendError(f"server returned no choices for {what}")
    return choices[0]


def _legacy_logprobs(response, what: str) -> dict:
    lp = _choice(response, what).get("logprobs")
    if not isinstance(lp, dict) or not lp.get("token_logprobs"):
        raise BackendError(f"server returned no prompt log-probabilities for {what} "
                           "(does it support echo with logprobs on /completions?)")
    return lp


def _text_span(lp: dict, prompt_end: int, text_end: int, what: str) -> tuple[int, int]:
    """Indices [start, end) of the option's tokens among the echoed ones, from ``text_offset``:
    the option must begin a token (else the server's tokenization merged it with the prompt)."""
    offsets = lp.get("text_offset")
    if not offsets:
        raise BackendError(f"server returned no text_offset for {what}: pass a tokenizer")
    start = next((i for i, o in enumerate(offsets) if o >= prompt_end), len(offsets))
    if start == len(offsets) or offsets[start] != prompt_end:
        raise BackendError(f"the server's tokenization merges the end of the prompt with {what}: "
                           "pass a tokenizer to score it as separate tokens")
    end = next((i for i in range(start, len(offsets)) if offsets[i] >= text_end), len(offsets))
    return start, end


def _sum_logprobs(values: list, start: int, end: int, what: str) -> float:
    """Eq. 2: the sum of the option tokens' log-probs (a missing one is an error, never 0)."""
    got = values[start:end]
    if end <= start or len(got) != end - start or any(
            not isinstance(v, (int, float)) or math.isnan(v) for v in got):
        raise BackendError(f"server returned no prompt log-probabilities for {what} "
                           f"(tokens {start}..{end - 1} of {len(values)}: {got})")
    return float(sum(got))


def _first_token_top(response, what: str) -> list[tuple[str, float]]:
    lp = _choice(response, what).get("logprobs")
    content = lp.get("content") if isinstance(lp, dict) else None
    top = content[0].get("top_logprobs") if content and isinstance(content[0], dict) else None
    if not top:
        raise BackendError(f"server returned no first-token log-probabilities for {what}")
    return [(t.get("token") or "", t.get("logprob")) for t in top if isinstance(t, dict)]


def _answers(response) -> list[str]:
    choices = response.get("choices") if isinstance(response, dict) else None
    if not choices:
        raise BackendError("server returned no choices for a sampling request")
    return [((c.get("message") or {}).get("content") or "") for c in choices if isinstance(c, dict)]


__all__ = ["OPENAI_ESTIMATORS", "OpenAIBackend"]
