from pathlib import Path

import pytest

from acealign.prompts import (
    TEMPLATES,
    build_prompt,
    country_name,
    option_verbalizations,
    verbalize_persona,
)
from acealign.survey import Option, Persona, Question
from acealign.testing import tiny_tokenizer

DATA = Path(__file__).resolve().parents[2] / "shared/data/surveys"

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


def test_option_verbalizations_are_numbers_from_one():
    assert option_verbalizations(Q) == [str(k) for k in range(1, 12)]


def test_plain_prompt_contents():
    p = Persona("germany", gender="Female")
    text = build_prompt(p, Q, "paper", chat=False)
    assert text.startswith("You are a female living in Germany.\nPlease answer the following survey question")
    assert "Question: Do you agree that Germany is nice?\n" in text  # [COUNTRY] filled in
    assert "Options (scale from 1 to 11):\n1: label 0\n" in text and "\n11: label 10\n" in text
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
        assert "Egypt" in text and "11: label 10" in text and text.endswith("Answer:\n"), name
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
        assert f"\n{q.n_options}: {q.options[-1].label.strip()}\n" in text
        assert "[COUNTRY]" not in text
