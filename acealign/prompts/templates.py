"""Prompt templates, as data. Add a template by adding an entry to ``TEMPLATES``.

Fields are ``str.format`` strings. Placeholders:

- ``{persona}``: the persona in the second person ("You are a female currently living in ...").
- ``{persona_first}``: the same in the first person ("I am a female currently living in ...").
- ``{persona_as_if}``: a noun phrase ("a female currently living in ..., who is married").
- ``{country}``: the country's name ("the United States").
- ``{question}``: the question block (question text, numbered options), ending in the answer cue.
- ``{question_body}``: the same block without the answer cue, and ``{answer_cue}`` ("Answer:"),
  for templates that put the persona between the question and the answer.

``system`` is sent as the chat system message (chat mode) or as the first paragraph (plain mode);
``user`` is the user message. ``None`` means no system message. Plain prompts end with a newline
after the answer cue; chat prompts end with the assistant turn's header. Either way the option
number is scored right after the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Template:
    name: str
    description: str
    system: str | None
    user: str


# The question block shared by every template (the layout of the ACE-Align release's prompt).
# {scale} says which numbers the options carry (acealign.prompts.scale_description).
QUESTION_BODY = "Question: {text}\n\nOptions ({scale}):\n{options}"
ANSWER_CUE = "Answer:"
QUESTION_BLOCK = QUESTION_BODY + "\n\n" + ANSWER_CUE
OPTION_LINE = "{number}: {label}"
# Option numbers forming a contiguous range (the release's wording for 1..K), or not.
SCALE_RANGE = "scale from {lo} to {hi}"
SCALE_POINTS = "scale points {numbers}"
# Non-substantive options ("Can't choose") are printed but are not points of the scale.
OFF_SCALE_ONE = "; {numbers} is not on the scale"
OFF_SCALE_MANY = "; {numbers} are not on the scale"
# Options whose label is only a number (the middle of a 0-10 scale) read as a scale point; {number}
# is the option's printed number.
SCALE_POINT_LABEL = "Point {number} on scale"
# Question-first variant of the instruction: the persona follows the question.
INSTRUCTION_QUESTION_FIRST = (
    "Please answer the following survey question, and ensure that your choice reflects the "
    "persona described after it. Do not add explanations or additional content. Respond with the "
    "number of the option you choose."
)
ANTHROPOLOGICAL_FRAME = (
    "You are taking part in a survey about social and cultural values. Approach the "
    "question as an anthropologist would: consider the norms, beliefs and traditions "
    "of {country}; how your gender, education, place of residence and marital status "
    "shape your everyday experience there; the perspective of a member of this society "
    "(emic) rather than that of an outside observer (etic); and do not project the "
    "assumptions of other cultures onto it (cultural relativism). Then answer as this "
    "respondent would. Respond with the number of the option you choose."
)
INSTRUCTION = (
    "Please answer the following survey question, and ensure that your choice reflects the "
    "persona described above. Do not add explanations or additional content. Respond with the "
    "number of the option you choose."
)

TEMPLATES: dict[str, Template] = {
    t.name: t
    for t in [
        Template(
            name="paper",
            description="the ACE-Align persona prompt: persona sentence, instruction, question",
            system=None,
            user="{persona}\n" + INSTRUCTION + "\n\n{question}",
        ),
        Template(
            name="anthropological",
            description="anthropological prompting (AlKhamissi et al. 2024): frame the respondent's "
            "cultural context before answering",
            system=None,
            user="{persona}\n" + ANTHROPOLOGICAL_FRAME + "\n\n{question}",
        ),
        # Question-first variants: the same words, with the persona moved between the question and
        # the answer cue. Every persona of a question then shares one long prompt prefix (the
        # question), which the scorer computes once: about 5x less work on a CPU. The `quick`
        # profile uses them; the paper's order is `paper` / `anthropological`.
        Template(
            name="paper-question-first",
            description="the paper prompt with the persona after the question (fast prefix sharing)",
            system=None,
            user=INSTRUCTION_QUESTION_FIRST + "\n\n{question_body}\n\n{persona}\n{answer_cue}",
        ),
        Template(
            name="anthropological-question-first",
            description="anthropological prompting with the persona after the question",
            system=None,
            user=ANTHROPOLOGICAL_FRAME + "\n\n{question_body}\n\n{persona}\n{answer_cue}",
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
