"""The report: figures (matplotlib Agg) and HTML / Markdown / CSV / JSON writers over the analyses."""

from .build import (
    MANIFEST,
    MANIFEST_FIELDS,
    PREDICTIONS,
    ReportResult,
    build_report,
    find_predictions,
    load_predictions,
    read_manifest,
    update_manifest,
)
from .tables import analyse, summary_table

__all__ = [
    "MANIFEST",
    "MANIFEST_FIELDS",
    "PREDICTIONS",
    "ReportResult",
    "analyse",
    "build_report",
    "find_predictions",
    "load_predictions",
    "read_manifest",
    "summary_table",
    "update_manifest",
]
