
import pytest

from acealign.prompts import (
    TEMPLATES,
    build_prompt,
    country_name,
    option_numbers,
    option_verbalizations,
    question_block,
    scale_description,
    verbalize_persona,
)
from acealign.survey import Option, Persona, Question, package_data_dir
from acealign.testing import tiny_tokenizer

DATA = package_data_dir()

Q = Question(
    "issp", "family", "v5", "Do you agree that [COUNTRY] is nice? ",
    tuple(Option(str(i), f"label {i}") for i in range(11)),
)


def test_persona_g4_matches_paper_wording():
    p = Persona("egypt", gender="Female", education="No_College", residence="Rural",
                marital_status="Married")
    assert verbalize_persona(p) == (
        "You are a female currently living in a rural area in Egypt. You have not completed a "
        "college education, and you are married."
    )
    assert verbalize_persona(p, "first") == (
        "I am a female currently living in a rural area in Egypt. I have not completed a "
        "college education, and I am married."
    )
    assert verbalize_persona(p, "as_if") == (
        "a female currently living in a rural area in Egypt, who has not completed a college "
        "education and is married"
    )


@pytest.mark.parametrize(
    "persona, text",
    [
        (Persona("united_states"), "You are living in the United States."),
        (Persona("japan", gender="Male"), "You are a male living in Japan."),
        (Persona("india", residence="Urban"), "You are currently living in an urban area in India."),
        (Persona("chile", education="College"),
         "You are living in Chile. You have completed a college education."),
        (Persona("chile", marital_status="Not_Married"),
         "You are living in Chile. You are not married."),
    ],
)
def test_persona_every_granularity(persona, text):
    assert verbalize_persona(persona) == text


def test_country_names():
    assert country_name("united_states") == "the United States"
    assert country_name("philippines") == "the Philippines"
    assert country_name("new_zealand") == "New Zealand"
    assert country_name("egypt") == "Egypt"


def test_option_verbalizations_are_the_codes_of_a_0_to_10_question():
    assert option_verbalizations(Q) == [str(k) for k in range(0, 11)]


def q_of(codes, labels=None, off=()):
    """A question with these codes (labels default to 'label <code>'); indices in ``off`` are
    non-substantive."""
    labels = labels or [f"label {c}" for c in codes]
    opts = tuple(Option(c, lab, i not in off) for i, (c, lab) in enumerate(zip(codes, labels, strict=True)))
    return Question("d", "t", "q", "Rate it.", opts)


def test_v40_like_0_to_10_scale_uses_the_codes():
    # Germany ISSP v40: "a scale from 0 to 10"; end labels carry the number, the middle ones are
    # only numbers. The number printed, the header and the number scored all say 0..10.
    labels = ["0, All public", *[str(k) for k in range(1, 10)], "10, Security first"]
    q = q_of([str(k) for k in range(11)], labels)
    assert option_verbalizations(q) == ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10"]
    block = question_block(q)
    assert block == (
        "Question: Rate it.\n\nOptions (scale from 0 to 10):\n0: 0, All public\n1: Point 1 on scale\n"
        + "".join(f"{k}: Point {k} on scale\n" for k in range(2, 10))
        + "10: 10, Security first\n\nAnswer:"
    )


def test_1_to_4_question_is_unchanged():
    q = q_of(["1", "2", "3", "4"], ["Very", "Quite", "Not very", "Not at all"])
    assert option_verbalizations(q) == ["1", "2", "3", "4"]
    assert question_block(q, cue=False) == (
        "Question: Rate it.\n\nOptions (scale from 1 to 4):\n1: Very\n2: Quite\n3: Not very\n4: Not at all"
    )


@pytest.mark.parametrize("codes", [
    ["a", "b", "c"],        # not integers
    ["1", "x", "3"],        # one is not an integer
    ["2", "1", "3"],        # not ascending along the list
    ["3", "2", "1"],        # descending
    ["1", "1", "2"],        # repeated (readers reject it; the numbering still falls back)
    ["1.5", "2", "3"],      # not an integer
])
def test_non_integer_or_non_ascending_codes_fall_back_to_1_to_k(codes):
    q = q_of(codes)
    assert option_verbalizations(q) == ["1", "2", "3"]
    assert "Options (scale from 1 to 3):\n1: label " in question_block(q)


def test_bare_number_label_follows_the_printed_number():
    # Codes a..c fall back to 1..3: the label "1" of the second option is scale point 2 here, and
    # the line must not read "2: Point 1 on scale".
    q = q_of(["a", "b", "c"], ["Low", "1", "High"])
    assert "1: Low\n2: Point 2 on scale\n3: High\n" in question_block(q)


def test_scale_header_is_truthful():
    # Gaps: the codes are the numbers, and the header lists them rather than claim a range.
    assert scale_description(q_of(["1", "2", "3", "5"])) == "scale points 1, 2, 3, 5"
    # Leading zeros are the same numbers.
    assert option_numbers(q_of(["01", "02", "03"])) == [1, 2, 3]
    # A bipolar scale coded -2..2.
    assert scale_description(q_of(["-2", "-1", "0", "1", "2"])) == "scale from -2 to 2"
    # v56-like: 0 "Doesn't apply" is printed but is no scale point.
    v56 = q_of(["0", "1", "2", "3"], ["Doesn't apply, no job", "Satisfied", "Neutral", "Dissatisfied"], off={0})
    assert question_block(v56, cue=False) == (
        "Question: Rate it.\n\nOptions (scale from 1 to 3; 0 is not on the scale):\n"
        "0: Doesn't apply, no job\n1: Satisfied\n2: Neutral\n3: Dissatisfied"
    )
    two_off = q_of(["1", "2", "3", "8", "9"], off={3, 4})
    assert scale_description(two_off) == "scale from 1 to 3; 8, 9 are not on the scale"
    # 1..K numbering with a non-substantive option in the middle: the scale is 1 and 3.
    mid = q_of(["a", "b", "c"], ["Agree", "Don't know", "Disagree"], off={1})
    assert scale_description(mid) == "scale points 1, 3; 2 is not on the scale"
    # The scored numbers of the scale are the printed ones at scale_indices.
    assert [option_verbalizations(two_off)[i] for i in two_off.scale_indices] == ["1", "2", "3"]


def test_plain_prompt_contents():
    p = Persona("germany", gender="Female")
    text = build_prompt(p, Q, "paper", chat=False)
    assert text.startswith("You are a female living in Germany.\nPlease answer the following survey question")
    assert "Question: Do you agree that Germany is nice?\n" in text  # [COUNTRY] filled in
    assert "Options (scale from 0 to 10):\n0: label 0\n" in text and "\n10: label 10\n" in text
    assert text.endswith("\n\nAnswer:\n")
    scale = Question("wvs7", "t", "Q1", "Rate it.", (Option("1", "Bad"), Option("2", "2"), Option("3", "Good")))
    assert "1: Bad\n2: Point 2 on scale\n3: Good\n" in build_prompt(p, scale, chat=False)


def test_chat_prompt_uses_the_tokenizer_template():
    tok = tiny_tokenizer()
    p = Persona("egypt", residence="Rural")
    text = build_prompt(p, Q, "paper", tokenizer=tok, chat=True)
    assert text.startswith("<s>user\nYou are currently living in a rural area in Egypt.\nPlease answer")
    assert text.endswith("Answer:</s>\n<s>assistant\n")
    assert build_prompt(p, Q, tokenizer=tok, chat=None) == text  # auto: chat template present
    with pytest.raises(ValueError, match="no chat template"):
        build_prompt(p, Q, tokenizer=tiny_tokenizer(chat=False), chat=True)


def test_all_templates_render_persona_and_question():
    p = Persona("egypt", gender="Male", marital_status="Married")
    for name in TEMPLATES:
        text = build_prompt(p, Q, name, chat=False)
        assert "Egypt" in text and "\n10: label 10\n" in text and text.endswith("Answer:\n"), name
    assert "Description: I am a male living in Egypt. I am married." in build_prompt(p, Q, "bio", chat=False)
    assert "as if you were a male living in Egypt, who is married." in build_prompt(p, Q, "portray", chat=False)
    g0 = build_prompt(Persona("egypt"), Q, "portray", chat=False)
    assert "as if you were a person living in Egypt." in g0
    assert "anthropologist" in build_prompt(p, Q, "anthropological", chat=False)
    with pytest.raises(ValueError, match="unknown template"):
        build_prompt(p, Q, "nope")


@pytest.mark.skipif(not (DATA / "questions.jsonl").exists(), reason="shared survey data not present")
def test_real_questions_render():
    from acealign.survey import load_survey

    data = load_survey(DATA)
    for qkey in data.question_keys("united_states")[:5]:
        q = data.questions[qkey]
        text = build_prompt(Persona("united_states", gender="Female"), q, chat=False)
        assert f"\n{option_verbalizations(q)[-1]}: {q.options[-1].label.strip()}\n" in text
        assert "[COUNTRY]" not in text
    # Every option line of every question starts with the number that is scored.
    for q in data.questions.values():
        lines = question_block(q, cue=False).split(":\n", 1)[1].split("\n")
        assert [line.split(":", 1)[0] for line in lines] == option_verbalizations(q), q.key
    # The questions whose codes start at 0 are numbered from 0 (Germany v40: 0..10).
    v40 = data.questions["issp/role_of_government/v40"]
    assert "scale from 0 to 10" in v40.text and scale_description(v40) == "scale from 0 to 10"
    assert option_verbalizations(v40)[:3] == ["0", "1", "2"]
