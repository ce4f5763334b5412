"""Training hooks: iteration timer, LR scheduler, periodic checkpointer, periodic evaluation, writers."""

import logging
import os
import re
import time
from typing import Callable, List, Optional

import numpy as np


from detgn.checkpoint.detection_checkpoint import get_rng_state
from detgn.utils import comm

from .train_loop import HookBase

__all__ = ["IterationTimer", "LRScheduler", "PeriodicCheckpointer", "EvalHook", "PeriodicWriter"]

logger = logging.getLogger(__name__)


class IterationTimer(HookBase):
    """Puts "time" (seconds per step, hooks included) in the storage; logs the total at the end."""

    def __init__(self, warmup_iter: int = 3):
        self._warmup_iter = warmup_iter
        self._step_start = None
        self._train_start = None
        self._times = []

    def before_train(self):
        self._train_start = time.perf_counter()

    def before_step(self):
        self._step_start = time.perf_counter()

    def after_step(self):
        elapsed = time.perf_counter() - self._step_start
        if comm.is_main_process():
            self.trainer.storage.put_scalar("time", elapsed)
        self._times.append(elapsed)

    def after_train(self):
        total = time.perf_counter() - (self._train_start or time.perf_counter())
        steady = self._times[self._warmup_iter :]
        if steady:
            logger.info(
                "Total training time: %.1f s (%d iterations, %.4f s/it after %d warm-up iterations)",
                total,
                len(self._times),
                sum(steady) / len(steady),
                self._warmup_iter,
            )
        else:
            logger.info("Total training time: %.1f s", total)


class LRScheduler(HookBase):
    """Records the LR of the largest param group, then steps the scheduler, after every iteration.

    Its state is the scheduler's, which the checkpointer saves itself (the checkpoint's "scheduler"), so
    this hook's state_dict stays empty."""

    def __init__(self, optimizer, scheduler):
        self._optimizer = optimizer
        self.scheduler = scheduler
        groups = optimizer.param_groups
        self._best_group = max(range(len(groups)), key=lambda i: len(groups[i]["params"]))

    def after_step(self):
        lr = self._optimizer.param_groups[self._best_group]["lr"]
        if comm.is_main_process():
            self.trainer.storage.put_scalar("lr", lr, smoothing_hint=False)
        self.scheduler.step()


class PeriodicCheckpointer(HookBase):
    """Saves model_{iter:07d}.pth every `period` iterations and model_final.pth at the end, with the
    optimizer, scheduler, AMP scaler, RNG states, data seed and iteration.

    Before each save `before_save()` runs (DefaultTrainer flushes metrics.json there, so the row
    of a checkpointed iteration is on disk before its checkpoint, and a resumed run's history has
    no gap). Keeps the newest `max_to_keep` periodic checkpoints (0 = all), counted from the
    files in the directory, so checkpoints of an earlier run are pruned after a resume too.
    """

    _PERIODIC = re.compile(r"^model_(\d{7})\.pth$")

    def __init__(
        self,
        checkpointer,
        period: int,
        max_iter: int,
        max_to_keep: int = 0,
        extra_state: Optional[Callable] = None,
        before_save: Optional[Callable] = None,
    ):
        self.checkpointer = checkpointer
        self.period = int(period)
        self.max_iter = max_iter
        self.max_to_keep = max_to_keep
        self.extra_state = extra_state or (lambda: {})
        self.before_save = before_save or (lambda: None)

    _last_saved = None  # (name, iteration) of the latest save

    def _save(self, name, iteration):
        self.trainer.flush()  # buffered metrics and the finiteness check first: no checkpoint holds Inf/NaN
        self.before_save()
        # every rank's RNG (each micro-batch's with accumulation: a list per process), so each resumes its own
        # stream; rank 0 writes them, in rank order
        states = getattr(self.trainer, "rng_states", None)
        gathered = comm.gather(states() if states is not None else [get_rng_state()])
        rngs = [state for per_process in gathered for state in per_process]
        self.checkpointer.save(
            name, iteration=iteration, rng=rngs[0] if rngs else None, rng_per_rank=rngs, **self.extra_state()
        )
        self._last_saved = (name, iteration)

    def save_for_restart(self) -> Optional[str]:
        """The run stops for a restart after this iteration: save model_<iter>.pth unless this iteration's
        checkpoint (periodic or final) was just written. Returns the checkpoint's path."""
        iteration = self.trainer.iter
        if self._last_saved is None or self._last_saved[1] != iteration:
            self._save(f"model_{iteration:07d}", iteration)
            self._prune()
        return os.path.join(self.checkpointer.save_dir or "", f"{self._last_saved[0]}.pth")

    def periodic_checkpoints(self) -> List[str]:
        """Paths of model_NNNNNNN.pth in the save directory, oldest iteration first."""
        d = self.checkpointer.save_dir
        if not d or not os.path.isdir(d):
            return []
        names = sorted(n for n in os.listdir(d) if self._PERIODIC.match(n))
        return [os.path.join(d, n) for n in names]

    def _prune(self):
        if not comm.is_main_process() or self.max_to_keep <= 0:
            return
        for old in self.periodic_checkpoints()[: -self.max_to_keep]:
            try:
                os.remove(old)
            except FileNotFoundError:  # another process pruned it first
                pass

    def after_step(self):
        iteration = self.trainer.iter
        if self.period > 0 and (iteration + 1) % self.period == 0 and iteration + 1 < self.max_iter:
            self._save(f"model_{iteration:07d}", iteration)
            self._prune()
        if iteration + 1 >= self.max_iter:
            self._save("model_final", iteration)


def flatten_results(results: dict, prefix: str = "") -> dict:
    """Nested evaluation results -> {"a/b/metric": float}: {dataset: {task: {metric}}} -> "dataset/task/metric",
    {task: {metric}} -> "task/metric". A value that is not a number raises TypeError naming its path (an
    evaluator's results hold numbers only; tables and text belong in its log or its files)."""
    flat = {}
    for k, v in results.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(flatten_results(v, f"{path}/"))
        elif isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
            raise TypeError(f"evaluation result {path} is a {type(v).__name__}, not a number: {str(v)[:60]}")
        else:
            flat[path] = float(v)
    return flat


def storage_keys(results: dict) -> dict:
    """The scalars EvalHook stores: every number as "dataset/task/metric", and with one test dataset also as
    "task/metric" (the key plots and metrics files had before). Results of a trainer without datasets
    ({task: {metric}}) are stored as "task/metric"."""
    flat = flatten_results(results)
    datasets = [v for v in results.values() if isinstance(v, dict) and all(isinstance(t, dict) for t in v.values())]
    if len(results) == 1 and len(datasets) == 1:
        flat.update(flatten_results(datasets[0]))
    return flat


class EvalHook(HookBase):
    """Runs `eval_function()` every `period` iterations and after the last one; puts its results
    ({dataset: {task: {metric: value}}}) in the storage as "dataset/task/metric", and with one test dataset also
    as "task/metric" (storage_keys)."""

    def __init__(self, period: int, eval_function: Callable, eval_after_train: bool = True):
        self._period = period
        self._func = eval_function
        self._eval_after_train = eval_after_train
        self.last_results = None

    def _do_eval(self):
        self.trainer.flush()  # never evaluate weights that went non-finite since the last check
        results = self._func()
        if results:
            flat = storage_keys(results)
            if comm.is_main_process():
                self.trainer.storage.put_scalars(**flat, smoothing_hint=False)
        self.last_results = results
        comm.synchronize()

    def after_step(self):
        nxt = self.trainer.iter + 1
        if self._period > 0 and nxt % self._period == 0 and nxt != self.trainer.max_iter:
            self._do_eval()

    def after_train(self):
        if self._eval_after_train and self.trainer.iter >= self.trainer.max_iter:  # training completed
            self._do_eval()


class PeriodicWriter(HookBase):
    """Calls the writers every `period` iterations and at the end.

    So that a slow machine shows progress from the first minute, the console writers
    (EventWriter.console, e.g. CommonMetricPrinter) also write after the first iteration of a run and whenever
    `max_silence_s` seconds passed without a line. Those extra lines go to the console only, so
    metrics.json and TensorBoard get the same rows whatever the speed of the machine.
    """

    def __init__(self, writers, period: int = 20, max_silence_s: float = 60.0):
        self._writers = writers
        self._period = period
        self._max_silence_s = max_silence_s
        self._console = [w for w in writers if w.console]
        self._last_console = time.perf_counter()

    def after_step(self):
        it = self.trainer.iter
        now = time.perf_counter()
        if (it + 1) % self._period == 0 or it == self.trainer.max_iter - 1:
            for w in self._writers:
                w.write()
            self._last_console = now
        elif it == self.trainer.start_iter or now - self._last_console >= self._max_silence_s:
            for w in self._console:
                w.write()
            self._last_console = now

    def after_train(self):
        for w in self._writers:
            if not (self.trainer.interrupted and w in self._console):  # no stale console line after Ctrl-C
                w.write()
            w.close()
