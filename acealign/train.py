"""The training recipe: counterfactual pairs -> prompts -> option log-probs -> objective -> LoRA.

One trainer serves every method (``ace``, ``anchor``, ``causal``, ``distribution``,
``ace+distribution``): a method is only a per-epoch schedule of objective weights (config
``[methods]``). Consecutive epochs with the same weights form a *stage* (:func:`stages`): ``ace``
is an anchor stage, then a causal stage. The recipe, in the order it runs (:func:`train`), over
the parts in :mod:`acealign.training`:

1. configuration (:mod:`~acealign.training.config`): defaults (``acealign/config/train.toml``)
   < ``--config FILE`` < ``--set k=v``; saved as ``OUT/config.json``;
2. data (:mod:`~acealign.training.data`): pairs from the training side of a saved split only
   (training questions and countries, held-out persona combinations excluded), checked with
   ``check_split``, ``Split.check_training`` and :func:`check_no_eval_cells` (no pair on an
   evaluation question, whatever the split kind);
3. model (:mod:`~acealign.training.model`, :mod:`~acealign.training.schedule`): base model + a
   fresh LoRA adapter (peft), AdamW, LR schedule (:func:`make_optimizer`); Accelerate provides the
   device, the process group and mixed precision, so one command runs on a CPU and under
   ``accelerate launch`` on several GPUs;
4. loop (:mod:`~acealign.training.step`): stage by stage; each stage after the first starts a new
   AdamW and LR schedule over its own steps from the previous stage's weights (the paper starts
   epoch 2 "from the first-epoch checkpoint"; ``train.stage_optimizer = "keep"``: one optimizer
   for the whole run). Per optimizer step, micro-batches of pairs; both ends of each pair are
   scored with :class:`acealign.scoring.OptionScorer` (``grad=True``, ``train.scoring_mode``), the
   objective is computed by :mod:`acealign.objectives`, gradients are averaged over processes;
   progress bar and ``OUT/log.jsonl`` (one record per step, one ``"event": "stage"`` record as
   each stage starts). ``train.max_steps`` below the run's length never drops a stage: the budget
   is split across the stages in proportion to their lengths (:func:`stages`);
5. outputs (:mod:`~acealign.training.checkpoint`, :mod:`~acealign.training.evaluation`): a
   resumable checkpoint every ``checkpoint_every`` steps (``OUT/checkpoints/``), the adapter after
   each epoch (``OUT/epoch-K/``) and at the end (``OUT/adapter/``), in peft format; optional
   alignment scores on training/validation cells (``OUT/eval.json``) and learning curves
   (``eval.curve_every``: validation S and d_CDF as ``"event": "curve"`` log records).

Determinism: the data order of epoch e is a permutation seeded by (seed, e); LoRA init and dropout
use torch's RNG seeded by ``seed``. A checkpoint holds the adapter, optimizer, scheduler, RNG states
and data position (a checkpoint is also written at each stage's last step), so a resumed run
repeats the uninterrupted one step for step, across stage changes too.

The names of :mod:`acealign.training`'s parts are re-exported here (``from acealign import train as
T; T.resolve_config(...)``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .fileio import atomic_write_text
from .memory import allocator_phase
from .survey import DataError, SurveyData
from .training.checkpoint import (
    LOG_NAME,
    TrainState,
    append_log,
    checkpoint_step,
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    save_adapter,
    save_checkpoint,
    set_rng_state,
    truncate_log,
    write_json_atomic,
)
from .training.config import (
    CONFIG_NAME,
    DEFAULT_CONFIG,
    METHODS,
    MIXED_PRECISION,
    SCHEDULERS,
    STAGE_OPTIMIZERS,
    check_run_dir,
    config_differences,
    default_config,
    merge_config,
    parse_override,
    read_config_file,
    resolve_config,
    validate_config,
)
from .training.data import (
    PAIRS_NAME,
    check_no_eval_cells,
    epoch_order,
    epoch_steps,
    load_run_data,
    make_requests,
    pair_cells,
    pair_requests,
    pairs_digest,
    pairs_table,
    question_groups,
    split_pairs,
    step_batches,
    steps_per_epoch,
    subsample,
    training_countries,
    training_pairs,
    validation_pairs,
)
from .training.evaluation import (
    EVAL_NAME,
    CurveEvaluator,
    RunEvaluator,
    alignment_on_cells,
    curve_point,
    eval_sets,
    score_run_cells,
)
from .training.model import add_lora, lora_config, seeded_lora_model
from .training.schedule import (
    Stage,
    epoch_weights,
    epochs_completed,
    lr_lambda,
    make_optimizer,
    objective_name,
    stage_at,
    stage_lr,
    stage_runs,
    stages,
    total_steps,
)
from .training.step import average_gradients, batch_loss, optimizer_step

__all__ = [
    "CONFIG_NAME", "CurveEvaluator", "DEFAULT_CONFIG", "EVAL_NAME", "LOG_NAME", "METHODS",
    "MIXED_PRECISION", "SCHEDULERS", "STAGE_OPTIMIZERS", "Stage", "TrainResult", "TrainState", "add_lora",
    "alignment_on_cells", "append_log", "average_gradients", "batch_loss", "check_no_eval_cells",
    "check_run_dir", "checkpoint_step", "config_differences", "curve_point", "default_config", "epoch_order",
    "epoch_steps", "epoch_weights", "epochs_completed", "eval_sets", "latest_checkpoint",
    "load_checkpoint", "load_run_data", "lora_config", "lr_lambda", "make_optimizer",
    "make_requests", "merge_config", "objective_name", "optimizer_step", "pair_cells",
    "pair_requests", "pairs_digest", "parse_override", "question_groups", "read_config_file",
    "resolve_config", "rng_state", "save_adapter", "save_checkpoint", "score_run_cells",
    "seeded_lora_model", "set_rng_state", "split_pairs", "stage_at", "stage_runs", "stages",
    "step_batches", "steps_per_epoch", "subsample", "total_steps", "train", "training_countries",
    "training_pairs", "truncate_log", "validate_config", "validation_pairs", "write_json_atomic",
]


@dataclass
class TrainResult:
    out: Path
    adapter: Path
    n_pairs: int
    steps: int
    epochs_done: int
    last_loss: float | None
    evals: dict
    seconds: float
    main_process: bool = True  # False on the other processes of a multi-process run
    stages: list[dict] = field(default_factory=list)  # Stage.record() of each stage


def train(
    cfg: dict,
    out,
    *,
    data: SurveyData | None = None,
    split=None,
    resume: bool = False,
    progress: bool = True,
    model=None,
    tokenizer=None,
    stop_after: int | None = None,
) -> TrainResult:
    """Run (or resume) one training run into directory ``out``; see the module docstring.

    ``cfg``: a resolved configuration (:func:`resolve_config`). ``data``/``split``: already loaded
    objects (default: read from ``cfg["data"]["dir"]``/``cfg["data"]["split"]``). ``model``/
    ``tokenizer``: a base model to wrap instead of loading ``cfg["model"]["name"]``.
    ``stop_after``: return after this many optimizer steps of *this call*, without the final
    adapter (for tests and time-boxed runs; continue with ``resume=True``).
    """
    from accelerate import Accelerator

    t0 = time.perf_counter()
    validate_config(cfg)
    out = Path(out)
    # 1. Configuration: a resumed run must be the same run.
    check_run_dir(out, cfg, resume)
    # cpu=True without a GPU: Accelerate then forms a gloo process group under a launcher
    # (accelerate launch / torchrun), so multi-process CPU runs work as multi-GPU ones do.
    accelerator = Accelerator(mixed_precision=cfg["train"]["mixed_precision"],
                              cpu=not torch.cuda.is_available())

    # 2. Data: the training side of the split only.
    data, split = load_run_data(cfg, data, split)
    pairs = training_pairs(data, split, cfg)
    if accelerator.is_main_process:
        write_json_atomic(out / CONFIG_NAME, cfg)
        if cfg["data"]["context_granularity"] == 4:  # the ladder's pairs are G=4 pairs
            atomic_write_text(out / PAIRS_NAME, pairs_table(pairs))  # what "in-sample" means later

    # 3. Model + LoRA (seeded), step plan, optimizer, scorer, prompts; then the run's state.
    model, tokenizer = seeded_lora_model(cfg, model, tokenizer, accelerator)
    run = _Run.setup(cfg, out, accelerator, model, tokenizer, data, pairs)
    if resume:
        run.resume()
    elif run.main:
        out.mkdir(parents=True, exist_ok=True)
        run.log_path.unlink(missing_ok=True)
    # Optional evaluations (forward passes only: they consume no RNG, so they do not change
    # the trained adapter).
    run.evaluate = RunEvaluator(eval_sets(data, split, pairs, cfg, tokenizer), model, run.scorer,
                                accelerator, out)
    if cfg["eval"]["curve_every"]:
        run.curve = CurveEvaluator.build(data, split, cfg, tokenizer, model, run.scorer,
                                         accelerator, out)
    if not resume:
        run.evaluate(run.state, "before")
        if run.curve is not None:
            run.curve(0, 1, run.plan[0])

    # 4. The loop.
    with allocator_phase("training"):  # acealign.memory: no heap fragments (when managed)
        last_loss, finished = _train_loop(run, progress, stop_after)

    # 5. Final adapter (and evaluation when asked).
    if finished:
        if run.main:
            save_adapter(model, out / "adapter")
        run.evaluate.final(run.state)
        accelerator.wait_for_everyone()
    return run.result(last_loss, time.perf_counter() - t0)


@dataclass
class _Run:
    """What one call of :func:`train` works with, and the steps it takes with it."""

    cfg: dict
    out: Path
    accelerator: Any
    model: Any
    params: list
    pairs: list
    digest: str             # pairs_digest(pairs): a checkpoint must be of the same pairs
    plan: list[Stage]
    steps_per_epoch: int
    optimizer: Any = None
    scheduler: Any = None
    scorer: Any = None
    req1: list = field(default_factory=list)  # scoring requests of each pair's s1 end
    req0: list = field(default_factory=list)  # ... and of its s0 end
    state: TrainState = field(default_factory=TrainState)
    evaluate: Any = None    # RunEvaluator
    curve: Any = None       # CurveEvaluator (eval.curve_every > 0)

    @classmethod
    def setup(cls, cfg, out, accelerator, model, tokenizer, data, pairs) -> _Run:
        """The stage plan, the first stage's optimizer, the scorer and the pairs' prompts."""
        from .scoring import OptionScorer

        spe = steps_per_epoch(len(pairs), cfg, accelerator.num_processes)
        run = cls(cfg, out, accelerator, model, [p for p in model.parameters() if p.requires_grad],
                  pairs, pairs_digest(pairs), stages(cfg, spe), spe)
        # The model is not wrapped in DDP: gradients of the (small) adapter are averaged
        # explicitly (optimizer_step), so the scorer can call the peft model directly. Accelerate
        # wraps the optimizer for mixed-precision loss scaling and device placement.
        run.new_optimizer(run.plan[0])
        tcfg = cfg["train"]
        run.scorer = OptionScorer(model, tokenizer, batch_size=tcfg["scorer_batch_size"],
                                  mode=tcfg["scoring_mode"])
        run.req1, run.req0 = pair_requests(data, pairs, tokenizer, cfg)
        return run

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def fresh(self) -> bool:
        """A new optimizer per stage (``train.stage_optimizer = "fresh"``)?"""
        return self.cfg["train"]["stage_optimizer"] == "fresh"

    @property
    def log_path(self) -> Path:
        return self.out / LOG_NAME

    def new_optimizer(self, stage: Stage) -> None:
        """AdamW + LR schedule over ``stage``'s steps ("keep": one over the whole run)."""
        n_steps = stage.steps if self.fresh else total_steps(self.plan)
        ocfg = self.cfg["optim"]
        self.optimizer, self.scheduler = make_optimizer(self.params, ocfg, n_steps, self.accelerator,
                                                        lr=stage_lr(ocfg, stage.weights))

    def resume(self) -> None:
        """Continue from the latest checkpoint; the log loses what was written after it."""
        ckpt = latest_checkpoint(self.out)
        if ckpt is None:
            raise DataError("nothing to resume: no checkpoint yet (start the run again)", self.out)
        # The checkpoint's optimizer belongs to the stage of its last step: rebuild that one
        # (the schedule's length is not part of its state), then load into it.
        done = checkpoint_step(ckpt)
        if self.fresh and done > 0 and stage_at(self.plan, done - 1).index > 0:
            self.new_optimizer(stage_at(self.plan, done - 1))
        self.state = load_checkpoint(ckpt, self.model, self.optimizer, self.scheduler, self.digest,
                                     self.accelerator)
        if self.main:
            truncate_log(self.log_path, self.state.global_step)

    def start_stage(self, stage: Stage) -> None:
        """A new stage starts clean from the current weights (with "fresh"), and is logged."""
        if self.fresh and stage.index > 0:
            self.new_optimizer(stage)
        if self.main:
            append_log(self.log_path, {
                "step": stage.first_step + 1, "epoch": stage.first_epoch + 1, "event": "stage",
                **stage.record(), "optimizer": "fresh" if self.fresh or stage.index == 0 else "kept"})

    def step(self, stage: Stage, batches: list[list[int]]) -> dict[str, float]:
        """One optimizer step on this process' share of the step's micro-batches."""
        acc = self.accelerator
        mine = batches[acc.process_index::acc.num_processes]
        terms = optimizer_step(mine, self.pairs, self.req1, self.req0, stage.weights, self.scorer,
                               self.params, self.optimizer, self.scheduler, acc,
                               self.cfg["optim"]["max_grad_norm"])
        self.state.global_step += 1
        return terms

    def log_curve(self, stage: Stage, epoch: int) -> None:
        """A learning-curve point every ``eval.curve_every`` steps and at the plan's end. Logged
        before the step's checkpoint, so a resumed run neither lacks nor repeats it."""
        step, every = self.state.global_step, self.cfg["eval"]["curve_every"]
        if self.curve is not None and (step % every == 0 or step == total_steps(self.plan)):
            self.curve(step, epoch + 1, stage)

    def after_step(self, epoch: int, epoch_done: bool, stage_done: bool) -> None:
        """The epoch's adapter and evaluations as an epoch ends; a checkpoint when one is due."""
        if epoch_done:
            if self.main:
                save_adapter(self.model, self.out / f"epoch-{epoch + 1}")
            self.evaluate(self.state, f"epoch-{epoch + 1}")
        tcfg = self.cfg["train"]
        every = tcfg["checkpoint_every"]
        if epoch_done or stage_done or (every and self.state.global_step % every == 0):
            save_checkpoint(self.out, self.model, self.optimizer, self.scheduler, self.state,
                            self.digest, self.accelerator, tcfg["keep_checkpoints"])

    def result(self, last_loss: float | None, seconds: float) -> TrainResult:
        done = self.state.global_step
        return TrainResult(self.out, self.out / "adapter", len(self.pairs), done,
                           epochs_completed(self.plan, done, self.steps_per_epoch), last_loss,
                           self.state.evals, seconds, self.main, [st.record() for st in self.plan])


def _train_loop(run: _Run, progress: bool, stop_after: int | None) -> tuple[float | None, bool]:
    """Train to the plan's end, or for ``stop_after`` steps of this call: (last loss, finished).

    The plan fixes the stage, epoch and batch of every step, so a resumed run needs only the
    number of steps done.
    """
    from tqdm.auto import tqdm

    cfg, state = run.cfg, run.state
    run.model.train()
    bar = tqdm(total=total_steps(run.plan), initial=state.global_step,
               disable=not (progress and run.main), desc=f"train {cfg['method']}", unit="step",
               dynamic_ncols=True)
    groups = question_groups(run.pairs) if cfg["data"]["group_by_question"] else None
    running: dict[str, float] = {}
    last_loss, steps_this_call = None, 0
    steps, steps_epoch = [], None
    while state.global_step < total_steps(run.plan):
        stage = stage_at(run.plan, state.global_step)
        k = state.global_step - stage.first_step
        if k == 0:
            run.start_stage(stage)
        epoch, pos = stage.position(k, run.steps_per_epoch)
        if epoch != steps_epoch:
            steps = epoch_steps(len(run.pairs), cfg, epoch, run.accelerator.num_processes, groups)
            steps_epoch = epoch
        lr = run.scheduler.get_last_lr()[0]  # the rate this step uses (a new stage's starts afresh)
        terms = run.step(stage, steps[pos])
        epoch_done = pos + 1 == len(steps)
        state.epoch, state.step_in_epoch = (epoch + 1, 0) if epoch_done else (epoch, pos + 1)
        steps_this_call += 1
        last_loss = terms["loss"]
        _show_progress(bar, running, terms)
        if run.main and state.global_step % cfg["train"]["log_every"] == 0:
            append_log(run.log_path, {
                "step": state.global_step, "epoch": epoch + 1, "stage": stage.index + 1,
                "objective": stage.objective, "weights": stage.weights, **terms,
                "lr": lr, "pairs": sum(len(m) for m in steps[pos]),
            })
        run.log_curve(stage, epoch)
        run.after_step(epoch, epoch_done, stage_done=k + 1 == stage.steps)
        if stop_after is not None and steps_this_call >= stop_after:
            bar.close()
            return last_loss, False
    bar.close()
    return last_loss, True


def _show_progress(bar, running: dict[str, float], terms: dict[str, float]) -> None:
    """Advance the bar; its postfix shows running (EMA) averages of the step's terms."""
    for name, v in terms.items():
        running[name] = v if name not in running else 0.9 * running[name] + 0.1 * v
    bar.update(1)
    bar.set_postfix({name: f"{v:.4f}" for name, v in running.items()}, refresh=False)
