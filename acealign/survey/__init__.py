"""Survey data layer: types, the in-memory survey, and readers for each supported format."""

from .data import (
    DataLocation,
    SurveyData,
    all_g4_personas,
    default_data_dir,
    duplicate_answer_groups,
    duplicate_question_groups,
    package_data_dir,
    resolve_data_dir,
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
    """Load tidy tables from ``directory`` (default: ``$ACEALIGN_DATA``, else the tables shipped
    in the package; see :func:`resolve_data_dir`)."""
    return read_tidy(resolve_data_dir(directory).path)


__all__ = [
    "ATTRIBUTES",
    "ATTRIBUTE_VALUES",
    "Cell",
    "DataError",
    "DataLocation",
    "Option",
    "Persona",
    "Question",
    "SurveyData",
    "all_g4_personas",
    "default_data_dir",
    "duplicate_answer_groups",
    "duplicate_question_groups",
    "load_survey",
    "package_data_dir",
    "parse_attribute_list",
    "question_key",
    "read_tidy",
    "resolve_data_dir",
    "write_tidy",
]
