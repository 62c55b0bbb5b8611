"""The separately usable parts of the training recipe (acealign/training/)."""

from __future__ import annotations

import json

import pytest

from acealign.train import default_config
from acealign.training.config import check_run_dir
from acealign.training.data import epoch_steps, step_batches, steps_per_epoch


def test_steps_per_epoch_counts_the_epoch_steps():
    cfg = default_config()
    cfg["train"].update(batch_size=3, grad_accum=2)
    # 10 pairs -> micro-batches of 3,3,3,1 -> steps of 2 micro-batches: [[3,3],[3,1]]
    assert step_batches(list(range(10)), 3, 2, 1) == [[[0, 1, 2], [3, 4, 5]], [[6, 7, 8], [9]]]
    for n, procs in ((10, 1), (10, 2), (1, 1), (13, 3)):
        steps = epoch_steps(n, cfg, epoch=1, n_proc=procs)
        assert steps_per_epoch(n, cfg, procs) == len(steps)
        assert sorted(i for step in steps for micro in step for i in micro) == list(range(n))


def test_run_dir_checks(tmp_path):
    cfg = default_config()
    with pytest.raises(Exception, match="nothing to resume"):
        check_run_dir(tmp_path, cfg, resume=True)
    check_run_dir(tmp_path, cfg, resume=False)  # an unused folder is fine
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    check_run_dir(tmp_path, cfg, resume=True)  # the same run resumes
    other = json.loads(json.dumps(cfg))
    other["optim"]["lr"] = 0.5
    with pytest.raises(ValueError, match="different configuration.*optim.lr"):
        check_run_dir(tmp_path, other, resume=True)
    (tmp_path / "adapter").mkdir()
    with pytest.raises(ValueError, match="already holds a run"):
        check_run_dir(tmp_path, cfg, resume=False)


def test_stage_lr_applies_causal_lr_to_causal_only_stages():
    from acealign.training.schedule import stage_lr

    o = {"lr": 1e-3, "causal_lr": 1e-4}
    assert stage_lr(o, {"causal": 1.0}) == 1e-4
    assert stage_lr(o, {"anchor": 1.0}) == 1e-3
    assert stage_lr(o, {"anchor": 1.0, "causal": 30.0}) == 1e-3  # joint Eq. 14: one stage, optim.lr
    assert stage_lr({"lr": 1e-3, "causal_lr": 0.0}, {"causal": 1.0}) == 1e-3  # 0 = unset


def test_a_run_saved_before_causal_lr_existed_resumes(tmp_path):
    cfg = default_config()
    old = json.loads(json.dumps(cfg))
    del old["optim"]["causal_lr"]
    (tmp_path / "config.json").write_text(json.dumps(old))
    check_run_dir(tmp_path, cfg, resume=True)  # missing = 0.0 = what that run did
    cfg["optim"]["causal_lr"] = 1e-4
    with pytest.raises(ValueError, match="optim.causal_lr"):
        check_run_dir(tmp_path, cfg, resume=True)
