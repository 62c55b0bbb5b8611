"""Run one long job (a training run) in a fresh process, so that each starts from the same clean
state and the calling process stays small.

In one long process the peak resident memory grew from training run to training run: in the
standard profile's run, 2.97 GiB during the first method, 3.43 GiB by the sixth and 3.60 GiB while
the same process then scored the evaluation cells, although the memory each run leaves behind is
released (README "Memory"). A spawned process per run starts from a clean heap, and the calling
process holds only the data while it waits (0.36 GiB in the quick profile).

The child is *spawned*, not forked: forking a process whose OpenMP thread pool is running (any
torch op has started it) can hang the child. Arguments and the error travel by pickle between
this package's own processes only; nothing a user hands in is unpickled.
"""

from __future__ import annotations

import multiprocessing
import os
import traceback


class ChildError(RuntimeError):
    """A job failed in its child process; the message names the job and the child's error."""


def run_isolated(target, *args, what: str = "job", **kwargs) -> float:
    """Call ``target(*args, **kwargs)`` (a module-level function) in a spawned child process and
    wait for it; returns the child's peak resident memory (MiB). Its exceptions are raised here:
    ``DataError``, ``ValueError`` and ``FileNotFoundError`` with their type and message, others as
    :class:`ChildError`; a child that dies without reporting (killed, out of memory) is a
    :class:`ChildError` with its exit code."""
    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child, args=(send, target, args, kwargs), name=f"acealign {what}")
    child.start()
    send.close()  # the child holds the only writer: EOF when it exits
    try:
        outcome = receive.recv()  # ("done", peak KiB) or ("error", kind, message, traceback)
    except EOFError:  # died before reporting
        outcome = None
    except KeyboardInterrupt:  # Ctrl-C reaches the child too (same process group)
        child.join(timeout=30)
        raise
    finally:
        receive.close()
    child.join()
    if outcome is not None and outcome[0] == "done":
        return outcome[1] / 1024
    if outcome is not None:
        _, kind, message, trace = outcome
        if os.environ.get("ACEALIGN_DEBUG"):
            message = f"{message}\n{trace}"
        from .survey import DataError

        # errors the CLI prints as one line (acealign.cli.main) keep their type; others are named
        passing = {"DataError": DataError, "ValueError": ValueError, "FileNotFoundError": FileNotFoundError}
        if kind in passing:
            raise passing[kind](message)
        raise ChildError(f"{what} failed in its process: {kind}: {message}")
    raise ChildError(f"{what}: its process stopped with exit code {child.exitcode}"
                     + (" (killed: out of memory?)" if child.exitcode == -9 else ""))


def _child(send, target, args, kwargs) -> None:
    import resource

    from .memory import manage_allocator

    if os.environ.get("ACEALIGN_QUIET"):  # the parent hid the libraries' warnings: so does the child
        from .quiet import quiet_libraries

        quiet_libraries()
    manage_allocator()
    try:
        target(*args, **kwargs)
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises it
        send.send(("error", type(e).__name__, str(e), traceback.format_exc()))
        raise SystemExit(1) from None
    send.send(("done", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
    send.close()
