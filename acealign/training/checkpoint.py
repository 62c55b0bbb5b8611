"""The files of a run directory: the step log, adapters, and resumable checkpoints.

A checkpoint (``OUT/checkpoints/step-N``) holds the adapter, optimizer, scheduler, every process'
RNG state and the data position, so that a resumed run repeats the uninterrupted one step for step.
Directories are written to a temporary name and moved into place.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..fileio import atomic_write_json, atomic_write_text
from ..survey import DataError

LOG_NAME = "log.jsonl"


def write_json_atomic(path: Path, obj) -> None:
    atomic_write_json(path, obj, indent=2)


def append_log(path: Path, record: dict) -> None:
    """One JSON record as a line of the run's log, flushed to disk."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def truncate_log(path: Path, last_step: int) -> None:
    """Drop log records written after the checkpoint a run resumes from."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= last_step]
    atomic_write_text(path, "".join(line + "\n" for line in keep))


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move a finished temp directory into place (the old one, if any, is removed first)."""
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def save_adapter(model, directory: Path) -> None:
    """The adapter in standard peft format (adapter_config.json + adapter_model.safetensors)."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        _replace_dir(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def rng_state() -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_as_tuple(state["python"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


@dataclass
class TrainState:
    """Where a run stands: ``global_step`` optimizer steps done; ``epoch``/``step_in_epoch``: the
    position just after the last one (the next step's position comes from the stage plan,
    :func:`acealign.training.schedule.stages`, since a stage cut by ``max_steps`` leaves its
    epoch early)."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    evals: dict = field(default_factory=dict)


def save_checkpoint(out: Path, model, optimizer, scheduler, state: TrainState, digest: str,
                    accelerator, keep: int) -> Path:
    """Write ``OUT/checkpoints/step-N`` atomically, then point ``OUT/checkpoints/latest`` at it."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    root = out / "checkpoints"
    final = root / f"step-{state.global_step:08d}"
    rank = accelerator.process_index
    # Every process writes its own RNG state into the main process' temp directory.
    tmp = root / f".step-{state.global_step:08d}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    torch.save(rng_state(), tmp / f"rng-{rank}.pt")
    if accelerator.is_main_process:
        weights = {k: v.detach().cpu().contiguous()
                   for k, v in get_peft_model_state_dict(model).items()}
        save_file(weights, str(tmp / "adapter_model.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        write_json_atomic(tmp / "state.json", {
            "epoch": state.epoch, "step_in_epoch": state.step_in_epoch,
            "global_step": state.global_step, "evals": state.evals,
            "pairs_digest": digest, "num_processes": accelerator.num_processes,
        })
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _replace_dir(tmp, final)
        write_json_atomic(root / "latest.json", {"checkpoint": final.name})
        done = sorted(p for p in root.glob("step-*") if p.is_dir())
        for old in done[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def latest_checkpoint(out: Path) -> Path | None:
    pointer = out / "checkpoints" / "latest.json"
    if not pointer.is_file():
        return None
    path = out / "checkpoints" / json.loads(pointer.read_text())["checkpoint"]
    if not (path / "state.json").is_file():
        raise DataError("checkpoint named by latest.json is missing or incomplete", path)
    return path


def checkpoint_step(path: Path) -> int:
    """Optimizer steps done when the checkpoint at ``path`` was written."""
    return int(json.loads((path / "state.json").read_text())["global_step"])


def load_checkpoint(path: Path, model, optimizer, scheduler, digest: str, accelerator) -> TrainState:
    """Restore adapter weights, optimizer, scheduler and this process' RNG state."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    meta = json.loads((path / "state.json").read_text())
    if meta["pairs_digest"] != digest:
        raise DataError("checkpoint was trained on other pairs (data, split or config changed)", path)
    if meta["num_processes"] != accelerator.num_processes:
        raise DataError(
            f"checkpoint was written by {meta['num_processes']} processes, this run has "
            f"{accelerator.num_processes}: the data order would differ", path)
    weights = load_file(str(path / "adapter_model.safetensors"), device=str(accelerator.device))
    result = set_peft_model_state_dict(model, weights)
    if getattr(result, "unexpected_keys", None):
        raise DataError(f"checkpoint adapter has unexpected keys {result.unexpected_keys[:3]}", path)
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    rng_file = path / f"rng-{accelerator.process_index}.pt"
    set_rng_state(torch.load(rng_file, weights_only=True))
    return TrainState(meta["epoch"], meta["step_in_epoch"], meta["global_step"], meta["evals"])
