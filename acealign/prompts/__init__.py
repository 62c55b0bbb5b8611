"""Persona verbalization and prompt construction: (persona, question) -> the exact text to score.

Each option is verbalized as a number: the model is asked to answer with an option number, and
Eq. 2 scores that number's tokens. The number printed before an option, the one in the "scale
from .. to .." header and the one scored are the same (:func:`option_numbers`), decided once per
question:

- when every option code is an integer (``"0"``, ``"10"``, ``"-1"``; ``"01"`` is 1), the codes are
  distinct and they ascend along the option list, the **survey's own codes** are the numbers: a
  question that defines a 0-10 scale is answered 0..10, a 1-4 one 1..4;
- otherwise (a code that is not an integer, a repeated or descending code) the options are
  numbered **1..K** in list order.

The options header says which numbers those are: "scale from 0 to 10" for a contiguous range,
"scale points 1, 2, 4" otherwise. Non-substantive options (``Option.substantive``) are printed
with their number, since the question is shown as it was asked, and the header names them as off
the scale ("scale from 1 to 7; 0 is not on the scale"); the scorer renormalizes over the scale
options only (``Question.scale_indices``). An option whose label is only a number (the middle of
a 0-10 scale) is printed as "Point N on scale" with its own option number N, so the line never
contradicts its number.
"""

from __future__ import annotations

import re
from itertools import pairwise

from ..survey import Persona, Question
from .templates import (
    ANSWER_CUE,
    OFF_SCALE_MANY,
    OFF_SCALE_ONE,
    OPTION_LINE,
    QUESTION_BLOCK,
    QUESTION_BODY,
    SCALE_POINT_LABEL,
    SCALE_POINTS,
    SCALE_RANGE,
    TEMPLATES,
    Template,
)

# Country ids whose English name takes "the" or is not simply the title-cased id.
_COUNTRY_NAMES = {
    "united_states": "the United States",
    "usa": "the United States",
    "united_kingdom": "the United Kingdom",
    "great_britain": "Great Britain",
    "philippines": "the Philippines",
    "netherlands": "the Netherlands",
    "czech_republic": "the Czech Republic",
    "dominican_republic": "the Dominican Republic",
    "slovak_republic": "the Slovak Republic",
    "united_arab_emirates": "the United Arab Emirates",
    "new_zealand": "New Zealand",
    "south_korea": "South Korea",
    "south_africa": "South Africa",
}


def country_name(country: str) -> str:
    """English name of a country id: ``united_states`` -> ``the United States``, ``egypt`` -> ``Egypt``."""
    key = country.strip().lower().replace(" ", "_").replace("-", "_")
    if key in _COUNTRY_NAMES:
        return _COUNTRY_NAMES[key]
    return " ".join(w if w in ("and", "of") else w.capitalize() for w in key.split("_"))


def _who_and_where(persona: Persona, nobody: str = "") -> str:
    """``a female currently living in a rural area in Egypt``; ``living in Egypt`` at G=0.

    Same wording as the ACE-Align release's persona prompt.
    """
    who = {"Female": "a female ", "Male": "a male ", None: nobody}[persona.gender]
    where = {"Rural": "currently living in a rural area in ", "Urban": "currently living in an urban area in ",
             None: "living in "}[persona.residence]
    return f"{who}{where}{country_name(persona.country)}"


def _clauses(persona: Persona, subject: str) -> list[str]:
    """Education and marital-status clauses for a subject ("you" / "I")."""
    have = {"you": "have", "I": "have", "who": "has"}[subject]
    be = {"you": "are", "I": "am", "who": "is"}[subject]
    out = []
    if persona.education is not None:
        neg = "" if persona.education == "College" else "not "
        out.append(f"{have} {neg}completed a college education")
    if persona.marital_status is not None:
        neg = "" if persona.marital_status == "Married" else "not "
        out.append(f"{be} {neg}married")
    return out


def verbalize_persona(persona: Persona, person: str = "second") -> str:
    """The persona as text, for any granularity G = 0..4.

    ``person="second"``: "You are a female currently living in a rural area in Egypt. You have not
    completed a college education, and you are married." ``"first"``: the same with I/am.
    ``"as_if"``: a noun phrase for "as if you were ...".
    """
    if person == "as_if":
        head = _who_and_where(persona, nobody="a person ")
        rest = _clauses(persona, "who")
        return head + (", who " + " and ".join(rest) if rest else "")
    if person not in ("first", "second"):
        raise ValueError(f"person must be 'first', 'second' or 'as_if', got {person!r}")
    head = _who_and_where(persona)
    subj, be = ("I", "am") if person == "first" else ("you", "are")
    text = f"{subj.capitalize()} {be} {head}."
    rest = [f"{subj} {c}" for c in _clauses(persona, subj)]
    if rest:
        sentence = ", and ".join(rest)
        text += " " + sentence[0].upper() + sentence[1:] + "."
    return text


_INT_CODE = re.compile(r"[+-]?\d+")


def option_numbers(question: Question) -> list[int]:
    """The number of each printed option: the survey's codes when they are integers that ascend
    along the list (e.g. 0..10), else 1..K (see the module docstring)."""
    codes = [o.code.strip() for o in question.options]
    if all(_INT_CODE.fullmatch(c) for c in codes):
        values = [int(c) for c in codes]
        # Strictly ascending also means distinct.
        if all(a < b for a, b in pairwise(values)):
            return values
    return list(range(1, question.n_options + 1))


def option_verbalizations(question: Question) -> list[str]:
    """Canonical verbalization of each printed option (Eq. 2's t(y)): its number as text, for all
    ``question.n_options`` options; the scale is ``question.scale_indices`` of them."""
    return [str(k) for k in option_numbers(question)]


def scale_description(question: Question) -> str:
    """What the options header says about the numbers: "scale from 0 to 10", "scale points 1,
    2, 4" when they are not a contiguous range, plus the numbers of non-substantive options
    ("scale from 1 to 7; 0 is not on the scale")."""
    numbers = option_numbers(question)
    on = [numbers[i] for i in question.scale_indices]
    off = [numbers[i] for i in question.nonscale_indices]
    if not on:
        raise ValueError(f"question {question.key} has no substantive option to answer on")
    if all(b == a + 1 for a, b in pairwise(on)):
        text = SCALE_RANGE.format(lo=on[0], hi=on[-1])
    else:
        text = SCALE_POINTS.format(numbers=", ".join(map(str, on)))
    if off:
        text += (OFF_SCALE_ONE if len(off) == 1 else OFF_SCALE_MANY).format(
            numbers=", ".join(map(str, off))
        )
    return text


def question_block(question: Question, country: str | None = None, cue: bool = True) -> str:
    """Question text, numbered options and the answer cue (``[COUNTRY]`` filled in when known).

    ``cue=False``: without the answer cue (for templates that put the persona after the question).
    """
    text = question.text.strip()
    if country is not None:
        text = text.replace("[COUNTRY]", country_name(country))
    lines = "\n".join(
        OPTION_LINE.format(number=v, label=_option_label(o.label, v))
        for v, o in zip(option_verbalizations(question), question.options, strict=True)
    )
    block = QUESTION_BLOCK if cue else QUESTION_BODY
    return block.format(text=text, scale=scale_description(question), options=lines)


def _option_label(label: str, number: str) -> str:
    # A bare number only marks a position on the scale; name the position by the printed number
    # so that e.g. a label "1" under 1..K numbering never reads "2: Point 1 on scale".
    label = label.strip()
    return SCALE_POINT_LABEL.format(number=number) if label.isdigit() else label


def get_template(template: str | Template) -> Template:
    if isinstance(template, Template):
        return template
    try:
        return TEMPLATES[template]
    except KeyError:
        raise ValueError(
            f"unknown template {template!r} (expected one of {', '.join(TEMPLATES)})"
        ) from None


def prompt_messages(persona: Persona, question: Question, template: str | Template = "paper") -> list[dict]:
    """Chat messages (system optional, then user) for one (persona, question)."""
    t = get_template(template)
    fields = {
        "persona": verbalize_persona(persona, "second"),
        "persona_first": verbalize_persona(persona, "first"),
        "persona_as_if": verbalize_persona(persona, "as_if"),
        "country": country_name(persona.country),
        "question": question_block(question, persona.country),
        "question_body": question_block(question, persona.country, cue=False),
        "answer_cue": ANSWER_CUE,
    }
    messages = []
    if t.system is not None:
        messages.append({"role": "system", "content": t.system.format(**fields)})
    messages.append({"role": "user", "content": t.user.format(**fields)})
    return messages


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def build_prompt(
    persona: Persona,
    question: Question,
    template: str | Template = "paper",
    tokenizer=None,
    chat: bool | None = True,
) -> str:
    """The exact text fed to the tokenizer; the option number is scored right after it.

    ``chat=True`` applies the tokenizer's chat template (system + user, then the assistant turn
    header); ``chat=False`` gives a plain prompt (the messages' text, ending ``"Answer:\\n"``) for
    base models; ``chat=None`` picks chat when the tokenizer has a chat template. Without a tokenizer
    the plain prompt is returned.
    """
    messages = prompt_messages(persona, question, template)
    if chat is None:
        chat = tokenizer is not None and has_chat_template(tokenizer)
    if chat and tokenizer is not None:
        if not has_chat_template(tokenizer):
            raise ValueError("the tokenizer has no chat template: use a plain prompt (chat=False)")
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "\n\n".join(m["content"] for m in messages) + "\n"


__all__ = [
    "TEMPLATES",
    "Template",
    "build_prompt",
    "country_name",
    "get_template",
    "has_chat_template",
    "option_numbers",
    "option_verbalizations",
    "prompt_messages",
    "question_block",
    "scale_description",
    "verbalize_persona",
]
