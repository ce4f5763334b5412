"""Training metrics: EventStorage collects scalars per iteration; writers print them, append them
to metrics.json (one strict-JSON object per line; NaN and Inf are written as null) and to TensorBoard event files."""

import datetime
import json
import logging
import math
import os
from collections import defaultdict
from typing import Dict, List, Optional

import numpy as np
import torch

from .atomic import atomic_write

__all__ = [
    "EventStorage",
    "get_event_storage",
    "put_model_stats",
    "JSONWriter",
    "CommonMetricPrinter",
    "TensorboardWriter",
]

_CURRENT_STORAGE_STACK: List["EventStorage"] = []


def get_event_storage() -> "EventStorage":
    if not _CURRENT_STORAGE_STACK:
        raise RuntimeError("get_event_storage() must be called inside a `with EventStorage(...)` block")
    return _CURRENT_STORAGE_STACK[-1]


def put_model_stats(**values) -> None:
    """Statistics a model computes in its training forward (e.g. the ROI heads' foreground / background counts):
    0-d tensors on the device, or numbers. They wait in the current storage until the trainer records the step
    (`EventStorage.pop_model_stats`), which reads them with the losses, without making the step wait for the
    device. A no-op outside a `with EventStorage()` block (inference, a model called from a script)."""
    if _CURRENT_STORAGE_STACK:
        _CURRENT_STORAGE_STACK[-1]._model_stats.update(values)


class EventStorage:
    """Scalar history: name -> list of (value, iteration); `iter` is the current iteration."""

    def __init__(self, start_iter: int = 0):
        self._history: Dict[str, List] = defaultdict(list)
        self._smoothing_hints: Dict[str, bool] = {}
        self._latest: Dict[str, tuple] = {}
        self._model_stats: Dict[str, object] = {}
        self.iter = start_iter

    def pop_model_stats(self) -> Dict[str, object]:
        """The statistics put_model_stats collected since the last call (then forgotten)."""
        stats, self._model_stats = self._model_stats, {}
        return stats

    def put_scalar(self, name: str, value, smoothing_hint: bool = True) -> None:
        value = float(value.item() if isinstance(value, torch.Tensor) else value)
        self._history[name].append((value, self.iter))
        self._latest[name] = (value, self.iter)
        self._smoothing_hints.setdefault(name, smoothing_hint)

    def put_scalars(self, *, smoothing_hint: bool = True, **kwargs) -> None:
        for k, v in kwargs.items():
            self.put_scalar(k, v, smoothing_hint=smoothing_hint)

    def history(self, name: str) -> List:
        if name not in self._history:
            raise KeyError(f"No history metric available for {name}!")
        return self._history[name]

    def histories(self):
        return self._history

    def latest(self) -> Dict[str, tuple]:
        return self._latest

    def median(self, name: str, window: int) -> float:
        return float(np.median([v for v, _ in self._history[name][-window:]]))

    def latest_with_smoothing_hint(self, window: int = 20) -> Dict[str, tuple]:
        out = {}
        for k, (v, it) in self._latest.items():
            out[k] = (self.median(k, window) if self._smoothing_hints[k] else v, it)
        return out

    def step(self) -> None:
        self.iter += 1

    def __enter__(self):
        _CURRENT_STORAGE_STACK.append(self)
        return self

    def __exit__(self, *exc):
        assert _CURRENT_STORAGE_STACK[-1] is self
        _CURRENT_STORAGE_STACK.pop()


def _json_number(value: float):
    """NaN/Inf -> None (JSON null): strict parsers (jq, JavaScript's JSON.parse) reject NaN. An undefined
    COCO metric (e.g. APl without large objects) is NaN in Python; see detgn/evaluation/coco_evaluation.py."""
    return value if math.isfinite(value) else None


class EventWriter:
    """What a training writer is: `write()` sends what is new in the event storage (get_event_storage()) somewhere,
    `close()` ends it; both run on the main process only, from the PeriodicWriter hook. Two class attributes say how
    the hooks treat it:

    - `console`: it prints progress lines; besides every LOG_PERIOD iterations it also writes after the first
      iteration and whenever the console has been silent for a minute, and not after Ctrl-C;
    - `before_checkpoint`: its output must hold an iteration's row before that iteration's checkpoint is saved (so
      a resumed run's file continues the file the checkpoint belongs to), e.g. metrics.json.

    A new logger backend is a subclass plus DefaultTrainer.build_writers() returning it with the others."""

    console: bool = False
    before_checkpoint: bool = False

    def write(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


def rows_since(storage, last_iter: int) -> Dict[int, Dict[str, float]]:
    """{iteration: {name: value}} of the scalars the storage holds for iterations after `last_iter`."""
    by_iter = defaultdict(dict)
    for name, hist in storage.histories().items():
        for value, it in reversed(hist):
            if it <= last_iter:
                break
            by_iter[it][name] = value
    return dict(by_iter)


class JSONWriter(EventWriter):
    """Appends one JSON line per iteration that has scalars: {"iteration": i, name: value, ...}.

    When training resumes at `start_iter`, lines for iterations >= start_iter (written by the
    interrupted run after its last checkpoint) are removed first, atomically.
    """

    before_checkpoint = True

    def __init__(self, json_file: str, start_iter: int = 0):
        self._file = json_file
        self._last_write = start_iter - 1
        if start_iter > 0 and os.path.exists(json_file):
            kept = []
            with open(json_file) as f:
                for line in f:
                    try:
                        if json.loads(line).get("iteration", -1) < start_iter:
                            kept.append(line if line.endswith("\n") else line + "\n")
                    except json.JSONDecodeError:  # a line cut by a crash
                        continue
            with atomic_write(json_file) as f:
                f.writelines(kept)
        self._handle = open(json_file, "a")

    def write(self) -> None:
        by_iter = rows_since(get_event_storage(), self._last_write)
        for it in sorted(by_iter):
            row = {"iteration": it, **{k: _json_number(v) for k, v in sorted(by_iter[it].items())}}
            self._handle.write(json.dumps(row, allow_nan=False) + "\n")
        if by_iter:
            self._last_write = max(by_iter)
        self._handle.flush()
        try:
            os.fsync(self._handle.fileno())
        except OSError:
            pass

    def close(self):
        self._handle.close()


class TensorboardWriter(EventWriter):
    """Scalars to TensorBoard event files (torch.utils.tensorboard). Without the `tensorboard`
    package it is off, with one INFO line saying so; any other error is raised."""

    def __init__(self, log_dir: str, window_size: int = 20):
        self._window_size = window_size
        self._last_write = -1
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir)
        except ImportError as e:  # the tensorboard package is missing
            logging.getLogger(__name__).info("TensorBoard logging is off (%s)", e)
            self._writer = None

    def write(self):
        if self._writer is None:
            return
        storage = get_event_storage()
        new_last = self._last_write
        for k, (v, it) in storage.latest_with_smoothing_hint(self._window_size).items():
            if it > self._last_write:
                self._writer.add_scalar(k, v, it)
                new_last = max(new_last, it)
        self._last_write = new_last
        self._writer.flush()

    def close(self):
        if self._writer is not None:
            self._writer.close()


class CommonMetricPrinter(EventWriter):
    """Console line: eta, iter (an optimizer step), losses (median of the window), time (of a whole step, micro-batches
    included, so the eta counts what is left honestly), data_time, lr, peak memory."""

    console = True

    def __init__(self, max_iter: Optional[int] = None, window_size: int = 20, step_note: str = ""):
        """step_note: what one iteration is made of, printed after its number (e.g. "8 micro-batches")."""
        self.logger = logging.getLogger("detgn.utils.events")
        self._max_iter = max_iter
        self._window_size = window_size
        self._step_note = f" ({step_note})" if step_note else ""

    def _eta(self, storage) -> Optional[str]:
        """Remaining iterations x the running mean of the last 100 step times (the first step of
        the history, which includes warm-up, is left out once there are others)."""
        if self._max_iter is None or "time" not in storage.histories():
            return None
        times = [v for v, _ in storage.history("time")]
        recent = times[1:][-100:] if len(times) > 1 else times
        eta = sum(recent) / len(recent) * max(self._max_iter - storage.iter - 1, 0)
        if not math.isfinite(eta):
            return None
        return str(datetime.timedelta(seconds=int(eta)))

    def write(self):
        storage = get_event_storage()
        iteration = storage.iter
        if self._max_iter is not None and iteration == self._max_iter:
            return
        hist = storage.histories()

        def med(k):
            return storage.median(k, self._window_size) if k in hist else None

        data_time, iter_time = med("data_time"), med("time")
        lr = hist["lr"][-1][0] if "lr" in hist else None
        eta = self._eta(storage)
        if torch.cuda.is_available():
            mem = f"max_mem: {torch.cuda.max_memory_allocated() / 1024**2:.0f}M"
        else:
            try:
                import resource

                mem = f"max_rss: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}M"
            except ImportError:  # no `resource` module (Windows)
                mem = ""
        losses = "  ".join(f"{k}: {storage.median(k, self._window_size):.4g}" for k in sorted(hist) if "loss" in k)
        self.logger.info(
            f"{'eta: ' + eta + '  ' if eta else ''}iter: {iteration}{self._step_note}  {losses}  "
            f"{'time: %.4f  ' % iter_time if iter_time is not None else ''}"
            f"{'data_time: %.4f  ' % data_time if data_time is not None else ''}"
            f"{'lr: %.6g  ' % lr if lr is not None else ''}{mem}"
        )

    def close(self):
        pass
