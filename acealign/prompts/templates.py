"""Prompt templates, as data. Add a template by adding an entry to ``TEMPLATES``.

Fields are ``str.format`` strings. Placeholders:

- ``{persona}``: the persona in the second person ("You are a female currently living in ...").
- ``{persona_first}``: the same in the first person ("I am a female currently living in ...").
- ``{persona_as_if}``: a noun phrase ("a female currently living in ..., who is married").
- ``{country}``: the country's name ("the United States").
- ``{question}``: the question block (question text, numbered options, instruction).

``system`` is sent as the chat system message (chat mode) or as the first paragraph (plain mode);
``user`` is the user message. ``None`` means no system message.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Template:
    name: str
    description: str
    system: str | None
    user: str


# The question block shared by every template: text, numbered options, instruction.
QUESTION_BLOCK = "Question: {text}\n\nOptions:\n{options}\n\n{instruction}"
OPTION_LINE = "{number}. {label}"
INSTRUCTION = "Answer with the number of one option only."
# Plain (non-chat) prompts end with this cue; the option number follows it (" 1" reads naturally).
PLAIN_ANSWER_CUE = "Answer: "

TEMPLATES: dict[str, Template] = {
    t.name: t
    for t in [
        Template(
            name="paper",
            description="persona sentence as the system message (ACE-Align's persona-conditioned prompt)",
            system="{persona}",
            user="{question}",
        ),
        Template(
            name="anthropological",
            description="anthropological prompting (AlKhamissi et al. 2024): frame the respondent's "
            "cultural context before answering",
            system="{persona}",
            user=(
                "You are taking part in a survey about social and cultural values. Before answering, "
                "reflect as an anthropologist would on the cultural context of the respondent: the "
                "norms, beliefs and traditions that are common in {country}; how your gender, "
                "education, place of residence and marital status shape your everyday experience "
                "there; the perspective of a member of this society (emic) rather than that of an "
                "outside observer (etic); and avoid projecting the assumptions of other cultures "
                "onto it (cultural relativism). Then answer as this respondent would.\n\n{question}"
            ),
        ),
        Template(
            name="bio",
            description="BIO steering format (OpinionQA / SubPOP): a first-person self-description",
            system=None,
            user=(
                "Below you will be asked to provide a short description of yourself and then "
                "answer some questions.\nDescription: {persona_first}\n\n{question}"
            ),
        ),
        Template(
            name="portray",
            description="PORTRAY steering format (OpinionQA / SubPOP): answer as if you were ...",
            system=None,
            user="Answer the following question as if you were {persona_as_if}.\n\n{question}",
        ),
    ]
}
