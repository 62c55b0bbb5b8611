import math
import string
import warnings

import numpy as np
import pytest
import torch

from acealign.scoring import (
    OptionScorer,
    ScoringRequest,
    answer_log_likelihood,
    continuation_token_ids,
    option_log_likelihood,
    option_tree,
    renormalize,
)
from acealign.survey import package_data_dir
from acealign.testing import tiny_model_and_tokenizer

DATA = package_data_dir()


@pytest.fixture(scope="module")
def tiny():
    return tiny_model_and_tokenizer(seed=0)


def continuing_ids(tok, option):
    """Tokens that continue ``option``, computed independently of the engine from the tiny
    character vocabulary: digits after a number, letters and digits after a word."""
    if option[-1].isdigit():
        chars = string.digits
    elif option[-1].isalpha():
        chars = string.digits + string.ascii_letters
    else:
        return []
    # raw vocabulary strings (byte-level BPE marks a leading space with "Ġ", not a digit/letter)
    return [i for t, i in tok.get_vocab().items() if t[:1] in chars and t[:1] != ""]


def manual_log_probs(model, tok, prompt, options, mode="whole"):
    """Eq. 2-3 the slow obvious way: one full forward per (prompt + option), sum the log-softmaxes;
    in "whole" mode add log(1 - P(next token continues the option))."""
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    lls = []
    for o in options:
        oi = tok(o, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            lp = torch.log_softmax(model(torch.tensor([ids + oi])).logits[0].double(), -1)
        ll = sum(lp[len(ids) - 1 + j, t].item() for j, t in enumerate(oi))
        if mode == "whole":
            cont = continuing_ids(tok, o)
            # an option extending this one by a non-word character would add its first token here
            ll += math.log(1.0 - lp[len(ids) + len(oi) - 1, cont].exp().sum().item())
        lls.append(ll)
    lls = np.array(lls)
    return lls - np.logaddexp.reduce(lls)


REQUESTS = [
    ScoringRequest("Question: pick one.\nAnswer: ", tuple(str(k) for k in range(1, 12))),
    ScoringRequest("Question: pick another one, please.\nAnswer: ", ("1", "2", "3")),
    ScoringRequest("Question: pick", ("yes", "no", "10")),
    ScoringRequest("Other question?", ("1", "22", "23", "234")),
]


def test_eq2_sums_token_log_probs():
    # log(0.5) + log(0.25) = log(0.125)
    got = option_log_likelihood(torch.tensor([math.log(0.5), math.log(0.25)]))
    assert got.item() == pytest.approx(math.log(0.125))


def test_eq3_renormalizes_over_options():
    # likelihoods 0.125 and 0.375 -> 0.125/0.5 = 0.25 and 0.375/0.5 = 0.75
    got = renormalize(torch.tensor([math.log(0.125), math.log(0.375)])).exp()
    assert got.tolist() == pytest.approx([0.25, 0.75])


def test_option_tree_shares_option_prefixes():
    # literal Eq. 2: "10"=(1,0) and "11"=(1,1) need the logits after (1,); "234" after (2,) and (2,3)
    assert option_tree([(1,), (1, 0), (1, 1)], whole=False) == [(1,)]
    assert option_tree([(1,), (2, 2), (2, 3), (2, 3, 4)], whole=False) == [(2,), (2, 3)]
    assert option_tree([(5,), (6,)], whole=False) == []
    # whole answers also need the logits after each complete option
    assert option_tree([(1,), (1, 0)], whole=True) == [(1,), (1, 0)]
    assert option_tree([(5,), (6,)], whole=True) == [(5,), (6,)]


@pytest.mark.parametrize("mode", ["whole", "literal"])
@pytest.mark.parametrize("batch_size", [1, 3, 8])
@pytest.mark.parametrize("prefix_sharing", [True, False])
def test_engine_matches_manual_eq2_eq3(tiny, batch_size, prefix_sharing, mode):
    model, tok = tiny
    scorer = OptionScorer(model, tok, batch_size=batch_size, prefix_sharing=prefix_sharing, mode=mode)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = scorer.log_probs(REQUESTS)
    for r, lp in zip(REQUESTS, got, strict=True):
        assert lp.shape == (len(r.options),)
        want = manual_log_probs(model, tok, r.prompt, r.options, mode)
        np.testing.assert_allclose(lp.numpy(), want, atol=1e-5)


def test_whole_answer_term_by_hand():
    # p(tokens) = 0.5, P(next continues) = 0.25 -> log 0.5 + log 0.75
    got = answer_log_likelihood(torch.tensor([math.log(0.5)]), torch.tensor(math.log(0.75)))
    assert got.item() == pytest.approx(math.log(0.375))
    # nothing continues (stop log-prob 0) is Eq. 2 itself
    assert answer_log_likelihood(torch.tensor([-1.0]), torch.tensor(0.0)).item() == pytest.approx(-1.0)


def test_whole_answer_on_a_uniform_model_by_hand():
    # All logits equal: p("1") = 1/V, and the next token continues "1" with P = 10/V (the ten
    # digit tokens of the character vocabulary), so l("1") = log(1/V) + log(1 - 10/V). The engine
    # sums the mass outside the continuation set, which stays exact even when it is tiny.
    model, tok = tiny_model_and_tokenizer(seed=0)
    scorer = OptionScorer(model, tok)
    digits = scorer.continuation_ids("1", ("1", "2"))
    assert len(digits) == 10
    with torch.no_grad():
        model.lm_head.weight.zero_()
    V = model.config.vocab_size
    lp = scorer.log_likelihoods([ScoringRequest("Pick: ", ("1", "2"))])[0]
    assert lp[0].item() == pytest.approx(math.log(1 / V) + math.log(1 - len(digits) / V), rel=1e-6)


def test_continuation_sets():
    texts = ["0", "5", "12", " 3", "a", "Ab", ",", ", strongly", ":", ""]
    assert continuation_token_ids(texts, "1") == [0, 1, 2]  # digits, not " 3" or ":"
    assert continuation_token_ids(texts, "Agree") == [0, 1, 2, 4, 5]  # the word goes on
    # an option extending this one by ", strongly": its first tokens count as continuations
    assert continuation_token_ids(texts, "Agree", ["Agree", "Agree, strongly"]) == [0, 1, 2, 4, 5, 6, 7]
    assert continuation_token_ids(texts, "(a)") == []


def test_scale_renormalizes_over_substantive_options(tiny):
    model, tok = tiny
    opts = ("0", "1", "2", "3")
    full = OptionScorer(model, tok).log_likelihoods([ScoringRequest("Pick: ", opts)])[0]
    got = OptionScorer(model, tok).log_probs([ScoringRequest("Pick: ", opts, scale=(1, 2, 3))])[0]
    want = full[1:] - torch.logsumexp(full[1:], 0)
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="does not index"):
        OptionScorer(model, tok).log_probs([ScoringRequest("Pick: ", opts, scale=(1, 4))])


def test_literal_mode_warns_on_prefix_options(tiny):
    model, tok = tiny
    with pytest.warns(UserWarning, match="prefix of '10'"):
        OptionScorer(model, tok, mode="literal").log_probs([ScoringRequest("Pick: ", ("1", "10"))])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no prefix pair, no warning; whole mode never warns
        OptionScorer(model, tok, mode="literal").log_probs([ScoringRequest("Pick: ", ("1", "2"))])
        OptionScorer(model, tok).log_probs([ScoringRequest("Pick: ", ("1", "10"))])
    with pytest.raises(ValueError, match="unknown scoring mode"):
        OptionScorer(model, tok, mode="first")


def test_ten_can_beat_one_only_with_whole_answers():
    # Teach a tiny model to answer "10" and stop: P("1") ~ 1, P("0"|"1") high, then end of turn.
    model, tok = tiny_model_and_tokenizer(seed=1)
    prompt = "Scale 1-10? "
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    seq = torch.tensor([ids + tok("10", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(60):
        opt.zero_grad()
        model(input_ids=seq, labels=seq).loss.backward()
        opt.step()
    model.eval()
    req = ScoringRequest(prompt, tuple(str(k) for k in range(1, 11)))
    literal = OptionScorer(model, tok, mode="literal")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lit = literal.distributions([req])[0]
    whole = OptionScorer(model, tok).distributions([req])[0]
    assert lit[0] >= lit[9]  # literal Eq. 2: p("10") = p("1") p("0"|"1") <= p("1")
    assert whole.argmax() == 9 and whole[9] > 0.5  # the whole answer "10" wins


def test_multi_token_option_scores_whole_sequence(tiny):
    model, tok = tiny
    assert len(tok("10", add_special_tokens=False)["input_ids"]) == 2
    prompt = "Pick: "
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    one, zero = tok("1")["input_ids"][0], tok("0")["input_ids"][0]
    with torch.no_grad():
        lp = torch.log_softmax(model(torch.tensor([ids + [one, zero]])).logits[0], -1)
    ll_1 = lp[len(ids) - 1, one].item()
    ll_10 = ll_1 + lp[len(ids), zero].item()  # Eq. 2: log p("1"|prompt) + log p("0"|prompt,"1")
    got = OptionScorer(model, tok, mode="literal").log_probs([ScoringRequest(prompt, ("1", "10"))])[0]
    expect = np.array([ll_1, ll_10]) - np.logaddexp(ll_1, ll_10)
    np.testing.assert_allclose(got.numpy(), expect, atol=1e-5)
    # first-token-only scoring would have given "1" and "10" the same likelihood
    assert abs(got[0] - got[1]) > 0.01


def test_batch_and_single_agree_and_order_is_kept(tiny):
    model, tok = tiny
    batched = OptionScorer(model, tok, batch_size=4).distributions(REQUESTS)
    for r, p in zip(REQUESTS, batched, strict=True):
        single = OptionScorer(model, tok, batch_size=1).distributions([r])[0]
        np.testing.assert_allclose(p, single, atol=1e-5)
        assert p.sum() == pytest.approx(1.0)


def test_gradient_flows_through_distribution(tiny):
    model, tok = tiny
    scorer = OptionScorer(model, tok, batch_size=2)
    lps = scorer.log_probs(REQUESTS[:3], grad=True)
    assert all(lp.requires_grad for lp in lps)
    model.zero_grad()
    loss = -sum(lp[0] for lp in lps)
    loss.backward()
    g = model.model.layers[0].self_attn.q_proj.weight.grad
    assert g is not None and g.abs().sum() > 0
    # gradient matches finite differences on one weight of the LM head
    w = model.lm_head.weight
    tok_id = tok("1", add_special_tokens=False)["input_ids"][0]
    analytic = w.grad[tok_id, 0].item()
    eps = 1e-3
    with torch.no_grad():
        w[tok_id, 0] += eps
        up = -sum(lp[0] for lp in scorer.log_probs(REQUESTS[:3])).item()
        w[tok_id, 0] -= 2 * eps
        down = -sum(lp[0] for lp in scorer.log_probs(REQUESTS[:3])).item()
        w[tok_id, 0] += eps
    model.zero_grad()
    assert analytic == pytest.approx((up - down) / (2 * eps), rel=2e-2, abs=1e-4)


def test_no_grad_results_carry_no_graph(tiny):
    model, tok = tiny
    assert not OptionScorer(model, tok).log_probs(REQUESTS[:1])[0].requires_grad


def test_too_long_prompt_is_a_clear_error(tiny):
    model, tok = tiny
    scorer = OptionScorer(model, tok, max_length=20)
    with pytest.raises(ValueError, match="more than the model's context of 20"):
        scorer.log_probs([ScoringRequest("x" * 30, ("1", "2"))])
    # default limit: the model's max_position_embeddings
    assert OptionScorer(model, tok).max_length == model.config.max_position_embeddings


def test_unencodable_option_is_a_clear_error(tiny):
    model, tok = tiny
    with pytest.raises(ValueError, match="cannot encode"):
        OptionScorer(model, tok).log_probs([ScoringRequest("Pick: ", ("1", "\u00e9"))])
    with pytest.raises(ValueError, match="no tokens"):
        OptionScorer(model, tok).log_probs([ScoringRequest("Pick: ", ("1", ""))])


@pytest.mark.model
@pytest.mark.skipif(not (DATA / "questions.jsonl").exists(), reason="shared survey data not present")
def test_real_default_model_scores_real_prompts():
    from acealign.models import load_model
    from acealign.prompts import build_prompt, option_verbalizations
    from acealign.survey import Persona, load_survey

    model, tok = load_model()
    data = load_survey(DATA)
    q = data.questions[data.question_keys("egypt")[0]]  # a 10-option item: "10" is two tokens
    personas = [Persona("egypt"), Persona("egypt", gender="Female", residence="Rural")]
    reqs = [ScoringRequest(build_prompt(p, q, tokenizer=tok), tuple(option_verbalizations(q)))
            for p in personas]
    dists = OptionScorer(model, tok, batch_size=2).distributions(reqs)
    for d in dists:
        assert d.shape == (q.n_options,) and d.sum() == pytest.approx(1.0)
    # Eq. 3 keeps likelihood ratios: log p(1)/p(10) = l(1) - l(10), checked by plain forwards.
    # Whole answers: an independent plain forward per option, plus P(next token is a digit).
    want = np.exp(manual_log_probs(model, tok, reqs[1].prompt, reqs[1].options))
    np.testing.assert_allclose(dists[1], want, atol=1e-5)
    assert not np.allclose(dists[0], dists[1])  # the persona changes the answer distribution


def test_batch_plan_keeps_prefix_groups_together(tiny):
    model, tok = tiny
    scorer = OptionScorer(model, tok, batch_size=4)
    # two prefix groups of 3 prompts (long shared prefixes), interleaved in the input
    a = [[1] * 30 + [5, k] for k in range(3)]
    b = [[2] * 30 + [6, k] for k in range(3)]
    prompts = [a[0], b[0], a[1], b[1], a[2], b[2]]
    plan = scorer.plan_batches(prompts)
    assert sorted(sorted(x) for x in plan) == [[0, 2, 4], [1, 3, 5]]
    # prompts sharing nothing: grouped by length so that little padding is run
    flat = [[3] * n for n in (5, 50, 6, 51)]
    plan = OptionScorer(model, tok, batch_size=2).plan_batches(flat)
    assert sorted(sorted(x) for x in plan) == [[0, 2], [1, 3]]


def test_sentencepiece_space_tokens_do_not_continue_a_number(tiny):
    # SentencePiece decodes "▁0" alone as "0": without the raw token it would count as a digit
    # continuing "1", though "1 0" is "1" followed by another word.
    model, _ = tiny

    class SPStub:
        pad_token_id, eos_token_id, all_special_ids = 0, 1, [0, 1]
        raw = ["<pad>", "</s>", "\u25810", "0", "\u2581and"]

        def __len__(self):
            return len(self.raw)

        def convert_ids_to_tokens(self, ids):
            return [self.raw[i] for i in ids]

        def batch_decode(self, seqs):
            return [self.raw[s[0]].replace("\u2581", "") for s in seqs]

    scorer = OptionScorer(model, SPStub())
    assert scorer.token_texts() == ["", "", " 0", "0", " and"]
    assert scorer.continuation_ids("1", ("1", "2")).tolist() == [3]


def test_grouped_query_attention_without_copies_gives_the_same_values(tiny, monkeypatch):
    """Inference passes grouped-query heads to SDPA as they are (enable_gqa), with the same values
    as transformers' repeat-the-heads path, and leaves the environment as it found it."""
    import os

    import torch.nn.functional as F

    model, tok = tiny  # 4 query heads over 2 key/value heads
    calls = []
    sdpa = F.scaled_dot_product_attention

    def recording(q, k, v, *args, **kw):
        calls.append((kw.get("enable_gqa", False), q.shape[1], k.shape[1]))
        return sdpa(q, k, v, *args, **kw)

    monkeypatch.setattr(F, "scaled_dot_product_attention", recording)
    monkeypatch.delenv("TRANSFORMERS_SDPA_FORCE_GQA", raising=False)
    grouped = OptionScorer(model, tok, batch_size=4).log_probs(REQUESTS)
    assert calls and all(gqa and (qh, kh) == (4, 2) for gqa, qh, kh in calls)
    assert "TRANSFORMERS_SDPA_FORCE_GQA" not in os.environ

    calls.clear()
    monkeypatch.setenv("TRANSFORMERS_SDPA_FORCE_GQA", "0")  # the user's own setting wins
    copied = OptionScorer(model, tok, batch_size=4).log_probs(REQUESTS)
    assert calls and all(not gqa and qh == kh == 4 for gqa, qh, kh in calls)
    for a, b in zip(grouped, copied, strict=True):
        assert torch.equal(a, b)

    # training (grad=True) keeps transformers' own choice: the same calls as with the switch off
    calls.clear()
    OptionScorer(model, tok, batch_size=4).log_probs(REQUESTS, grad=True)
    switched_off = list(calls)
    calls.clear()
    monkeypatch.delenv("TRANSFORMERS_SDPA_FORCE_GQA")
    OptionScorer(model, tok, batch_size=4).log_probs(REQUESTS, grad=True)
    assert calls == switched_off and any(not gqa for gqa, _, _ in calls)


def test_lm_head_runs_only_where_needed_as_one_matmul(tiny):
    """The shared-prefix pass sends no position through the LM head; pass 1 sends the last column
    only, as one matmul even when the head is frozen (as in every peft model), with the values a
    trainable head gives."""
    model, tok = tiny
    prefix = "A long instruction that every prompt of this batch shares word for word. "
    reqs = [ScoringRequest(prefix + f"Question {k}?\nAnswer: ", ("1", "2", "3")) for k in range(4)]
    rows = []
    hook = model.lm_head.register_forward_hook(lambda m, a, out: rows.append(tuple(a[0].shape)))
    try:
        trainable = OptionScorer(model, tok, batch_size=4).log_probs(reqs)
        model.lm_head.weight.requires_grad_(False)
        with torch.profiler.profile(record_shapes=True) as prof:
            frozen = OptionScorer(model, tok, batch_size=4).log_probs(reqs)
    finally:
        model.lm_head.weight.requires_grad_(True)
        hook.remove()
    V, H = model.config.vocab_size, model.config.hidden_size
    batched = [e for e in prof.events() if e.name == "aten::bmm" and any(s and V in s for s in e.input_shapes)]
    assert not batched
    assert all(torch.equal(a, b) for a, b in zip(trainable, frozen, strict=True))
    assert (1, 0, H) in rows and (4, 1, H) in rows  # the prefix pass, then pass 1's last column
