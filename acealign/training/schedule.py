"""What a run trains when: per-epoch objective weights, the stage plan, optimizer and LR schedule.

A method is a per-epoch schedule of objective weights (config ``[methods]``); consecutive epochs
with the same weights form a *stage* (:func:`stages`). With ``train.stage_optimizer = "fresh"``
every stage gets its own AdamW and LR schedule (:func:`make_optimizer`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch


def epoch_weights(cfg: dict, epoch: int) -> dict[str, float]:
    """Objective weights of ``epoch`` (0-based) for the configured method; the last entry repeats."""
    schedule = cfg["methods"][cfg["method"]]
    weights = schedule[min(epoch, len(schedule) - 1)]
    return {k: float(v) for k, v in weights.items() if float(v) != 0.0}


def objective_name(weights: dict[str, float]) -> str:
    """``anchor``, ``causal``, ``0.5*anchor+causal``: the weighted terms of Eq. 14 in words."""
    return "+".join(k if w == 1.0 else f"{w:g}*{k}" for k, w in weights.items())


@dataclass
class Stage:
    """A run of consecutive epochs with the same objective weights, trained as one unit: with
    ``train.stage_optimizer = "fresh"`` it gets its own AdamW and LR schedule over ``steps``."""

    index: int                  # 0-based
    weights: dict[str, float]
    first_epoch: int            # 0-based
    epochs: int
    first_step: int             # optimizer steps of the run before this stage
    steps: int                  # its optimizer steps (after a max_steps budget)

    @property
    def name(self) -> str:
        return f"stage-{self.index + 1}"

    @property
    def objective(self) -> str:
        return objective_name(self.weights)

    def position(self, k: int, steps_per_epoch: int) -> tuple[int, int]:
        """(epoch, step in that epoch), both 0-based, of this stage's ``k``-th step."""
        return self.first_epoch + k // steps_per_epoch, k % steps_per_epoch

    def record(self) -> dict:
        """The stage as the log and the run summary show it (steps and epochs 1-based)."""
        return {"stage": self.index + 1, "name": self.name, "objective": self.objective,
                "weights": dict(self.weights), "first_step": self.first_step + 1, "steps": self.steps,
                "epochs": list(range(self.first_epoch + 1, self.first_epoch + self.epochs + 1))}


def stage_runs(cfg: dict) -> list[tuple[dict[str, float], int, int]]:
    """(weights, first epoch, number of epochs) of each run of equal per-epoch weights."""
    runs: list[tuple[dict[str, float], int, int]] = []
    for e in range(cfg["train"]["epochs"]):
        w = epoch_weights(cfg, e)
        if runs and runs[-1][0] == w:
            runs[-1] = (w, runs[-1][1], runs[-1][2] + 1)
        else:
            runs.append((w, e, 1))
    return runs


def stages(cfg: dict, steps_per_epoch: int) -> list[Stage]:
    """The run's stage schedule: one :class:`Stage` per run of epochs with equal weights.

    ``train.max_steps`` below the full length never drops a stage: the budget is split across the
    stages in proportion to their full lengths (each gets one step, the rest by largest remainder,
    ties to the earlier stage); a truncated stage trains the first steps of its epochs. A budget
    smaller than the number of stages is a ValueError.
    """
    runs = stage_runs(cfg)
    full = [n * steps_per_epoch for _, _, n in runs]
    budget = full
    max_steps = cfg["train"]["max_steps"]
    if max_steps and max_steps < sum(full):
        if max_steps < len(runs):
            raise ValueError(f"train.max_steps={max_steps} is fewer than the {len(runs)} stages "
                             f"of method {cfg['method']!r}: every stage needs at least one step")
        rest, spare = max_steps - len(runs), [f - 1 for f in full]
        quota = [rest * x / sum(spare) for x in spare]
        share = [math.floor(q) for q in quota]
        by_remainder = sorted(range(len(runs)), key=lambda i: (share[i] - quota[i], i))
        for i in by_remainder[: rest - sum(share)]:
            share[i] += 1
        budget = [1 + x for x in share]
    out, first = [], 0
    for i, ((w, e0, n), steps) in enumerate(zip(runs, budget, strict=True)):
        out.append(Stage(i, w, e0, n, first, steps))
        first += steps
    return out


def stage_at(plan: Sequence[Stage], step: int) -> Stage:
    """The stage that runs the run's ``step``-th optimizer step (0-based; past the end: the last)."""
    for st in plan:
        if step < st.first_step + st.steps:
            return st
    return plan[-1]


def epochs_completed(plan: Sequence[Stage], done: int, steps_per_epoch: int) -> int:
    """Epochs all of whose steps ran, after ``done`` optimizer steps (a cut stage's last is not)."""
    return sum(min(max(done - st.first_step, 0), st.steps) // steps_per_epoch for st in plan)


def total_steps(plan: Sequence[Stage]) -> int:
    """Optimizer steps of the whole run."""
    return plan[-1].first_step + plan[-1].steps


def stage_lr(ocfg: dict, weights: dict[str, float]) -> float:
    """Base LR of a stage with objective ``weights``: ``optim.causal_lr`` when the stage trains the
    causal objective alone and that is set (> 0), else ``optim.lr``."""
    causal_lr = ocfg.get("causal_lr", 0.0)
    return causal_lr if causal_lr and set(weights) == {"causal"} else ocfg["lr"]


def make_optimizer(params, ocfg: dict, n_steps: int, accelerator=None, lr: float | None = None):
    """A new AdamW and its LR schedule (warm-up, then decay over ``n_steps``): the run's start
    and, with ``train.stage_optimizer = "fresh"``, every stage change. ``lr``: the base LR
    (default ``optim.lr``; see :func:`stage_lr`). ``accelerator``: prepare the optimizer with it
    (device placement, mixed-precision loss scaling)."""
    optimizer = torch.optim.AdamW(params, lr=ocfg["lr"] if lr is None else lr, betas=tuple(ocfg["betas"]),
                                  eps=ocfg["eps"], weight_decay=ocfg["weight_decay"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(ocfg["scheduler"], ocfg["warmup_steps"], n_steps))
    if accelerator is not None:
        # Forget the previous stage's optimizer: fp16 gradient unscaling goes over every
        # optimizer Accelerate holds, and would unscale the shared gradients twice.
        accelerator.free_memory()
        optimizer = accelerator.prepare(optimizer)
    return optimizer, scheduler


def lr_lambda(scheduler: str, warmup: int, total: int) -> Callable[[int], float]:
    """Multiplier of the base LR after ``step`` optimizer steps: linear warm-up, then decay."""

    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if scheduler == "constant" or total <= warmup:
            return 1.0
        frac = min(1.0, (step - warmup) / max(1, total - warmup))
        if scheduler == "linear":
            return 1.0 - frac
        return 0.5 * (1.0 + math.cos(math.pi * frac))

    return f
