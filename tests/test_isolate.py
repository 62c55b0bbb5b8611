"""acealign.isolate: a job in a spawned process, its errors raised in the caller."""
import os
from pathlib import Path

import pytest

from acealign.isolate import ChildError, run_isolated
from acealign.survey import DataError


def write_pid(path):
    Path(path).write_text(str(os.getpid()))


def fail_with(kind, message):
    raise {"value": ValueError, "data": DataError, "key": KeyError}[kind](message)


def die(code):
    os._exit(code)


def test_the_job_runs_in_another_process(tmp_path):
    peak_mb = run_isolated(write_pid, tmp_path / "pid")
    assert int((tmp_path / "pid").read_text()) != os.getpid()
    assert peak_mb > 1  # the child's own peak resident memory, in MiB


def test_errors_the_cli_prints_keep_their_type_and_message():
    with pytest.raises(ValueError, match="^bad lr$"):
        run_isolated(fail_with, "value", "bad lr")
    with pytest.raises(DataError, match="^x.csv: empty cell$"):
        run_isolated(fail_with, "data", "x.csv: empty cell")


def test_other_errors_and_dying_children_name_the_job():
    with pytest.raises(ChildError, match="training run ace failed in its process: KeyError: 'w'"):
        run_isolated(fail_with, "key", "w", what="training run ace")
    with pytest.raises(ChildError, match="training run ace: its process stopped with exit code 3"):
        run_isolated(die, 3, what="training run ace")
