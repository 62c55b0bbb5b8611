"""acealign: measure and improve how well language models reproduce sub-population values.

The package follows the data flow: survey -> personas -> pairs/splits -> prompts -> scoring ->
objectives/metrics -> analyses -> report.
"""

__version__ = "0.1.0"
