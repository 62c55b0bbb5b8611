"""Persona verbalization and prompt construction: (persona, question) -> the exact text to score.

The verbalization of option k (1-based, in the question's ordinal order) is its number ``"k"``:
the model is asked to answer with an option number, and Eq. 2 scores that number's tokens.
"""

from __future__ import annotations

from ..survey import Persona, Question
from .templates import (
    ANSWER_CUE,
    OPTION_LINE,
    QUESTION_BLOCK,
    QUESTION_BODY,
    SCALE_POINT_LABEL,
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


def option_verbalizations(question: Question) -> list[str]:
    """Canonical verbalization of each option (Eq. 2's t(y)): its 1-based number, ``["1", ..., "K"]``."""
    return [str(k) for k in range(1, question.n_options + 1)]


def question_block(question: Question, country: str | None = None, cue: bool = True) -> str:
    """Question text, numbered options and the answer cue (``[COUNTRY]`` filled in when known).

    ``cue=False``: without the answer cue (for templates that put the persona after the question).
    """
    text = question.text.strip()
    if country is not None:
        text = text.replace("[COUNTRY]", country_name(country))
    lines = "\n".join(
        OPTION_LINE.format(number=v, label=_option_label(o.label))
        for v, o in zip(option_verbalizations(question), question.options, strict=True)
    )
    block = QUESTION_BLOCK if cue else QUESTION_BODY
    return block.format(text=text, k=question.n_options, options=lines)


def _option_label(label: str) -> str:
    label = label.strip()
    return SCALE_POINT_LABEL.format(label=label) if label.isdigit() else label


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
    "option_verbalizations",
    "prompt_messages",
    "question_block",
    "verbalize_persona",
]
