"""Survey data layer: types, the in-memory survey, and readers for each supported format."""

from .data import (
    SurveyData,
    all_g4_personas,
    default_data_dir,
    duplicate_answer_groups,
    duplicate_question_groups,
)
from .tidy import read_tidy, write_tidy
from .types import (
    ATTRIBUTE_VALUES,
    ATTRIBUTES,
    Cell,
    DataError,
    Option,
    Persona,
    Question,
    parse_attribute_list,
    question_key,
)


def load_survey(directory=None) -> SurveyData:
    """Load tidy tables from ``directory`` (default: :func:`default_data_dir`)."""
    return read_tidy(default_data_dir() if directory is None else directory)


__all__ = [
    "ATTRIBUTES",
    "ATTRIBUTE_VALUES",
    "Cell",
    "DataError",
    "Option",
    "Persona",
    "Question",
    "SurveyData",
    "all_g4_personas",
    "default_data_dir",
    "duplicate_answer_groups",
    "duplicate_question_groups",
    "load_survey",
    "parse_attribute_list",
    "question_key",
    "read_tidy",
    "write_tidy",
]
