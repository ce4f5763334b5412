"""Training loop: TrainerBase with hooks, SimpleTrainer (fp32) and AMPTrainer (bf16 / fp16 autocast)."""

import contextlib
import logging
import signal
import threading
import time
import weakref
from typing import Dict, List, Optional, Tuple

import torch

from detgn.utils import comm, interrupt

from . import preemption
from detgn.utils.events import EventStorage, get_event_storage
from detgn.utils.errors import ConfigValueError

__all__ = ["HookBase", "TrainerBase", "SimpleTrainer", "AMPTrainer"]

logger = logging.getLogger(__name__)


class HookBase:
    """Called around training: before_train, before_step, after_step, after_train. `self.trainer` is set."""

    trainer: "TrainerBase" = None

    def before_train(self):
        pass

    def after_train(self):
        pass

    def before_step(self):
        pass

    def after_step(self):
        pass

    def save_for_restart(self) -> Optional[str]:
        """Called on every rank when the run stops for a restart (preemption.py), after the iteration's
        after_step; a checkpointer saves here and returns the path."""
        return None

    def state_dict(self) -> dict:
        """What this hook needs to continue exactly after a resume (an empty dict: nothing). The trainer's
        checkpoints hold it under "trainer" -> "hooks" -> the hook's name (see TrainerBase.state_dict)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what state_dict() returned; called on resume, before before_train."""


class _StopRequest:
    """The loop's view of detgn.utils.interrupt (shared with evaluation, which stops between images)."""

    @property
    def requested(self) -> bool:
        return interrupt.stop_requested()


@contextlib.contextmanager
def _stop_between_steps():
    """While training, the first Ctrl-C (SIGINT) asks the loop to stop after the current iteration and
    its hooks, where the loop raises KeyboardInterrupt; a second Ctrl-C interrupts at once. So a Ctrl-C
    never lands inside a C extension halfway through a step (where, e.g., numpy can turn it into a
    TypeError). Only in the main thread, and only when SIGINT has Python's default handler."""
    stop = _StopRequest()
    interrupt.clear_stop()
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        # no handler of ours (another thread, or SIGINT ignored/handled by the caller); a stop requested through
        # interrupt.request_stop() is still the loop's and ends with it
        try:
            yield stop
        finally:
            interrupt.clear_stop()
        return

    def handler(signum, frame):
        interrupt.request_stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        logger.warning("Ctrl-C: stopping after this iteration or evaluation image (press Ctrl-C again to stop at once)")

    signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        interrupt.clear_stop()


class TrainerBase:
    """Runs `run_step` from start_iter to max_iter - 1, calling the hooks around each step."""

    def __init__(self):
        self._hooks: List[HookBase] = []
        self.iter = 0
        self.start_iter = 0
        self.max_iter = 0
        self.storage: Optional[EventStorage] = None
        self.interrupted = False  # set when Ctrl-C stopped the loop

    @property
    def hooks(self) -> Tuple[HookBase, ...]:
        """The registered hooks, in the order they run."""
        return tuple(self._hooks)

    def flush(self) -> None:
        """Move buffered metrics to the event storage and check them; called by the hooks before an evaluation and
        a checkpoint. Nothing is buffered here; SimpleTrainer buffers its losses."""

    def register_hooks(self, hooks: List[Optional[HookBase]]) -> None:
        for h in hooks:
            if h is None:
                continue
            h.trainer = weakref.proxy(self)
            self._hooks.append(h)

    def train(self, start_iter: int, max_iter: int) -> None:
        logger.info("Starting training from iteration %d", start_iter)
        self.iter = self.start_iter = start_iter
        self.max_iter = max_iter
        with (
            EventStorage(start_iter) as self.storage,
            _stop_between_steps() as stop,
            preemption.checkpoint_on_signals(),
        ):
            try:
                self.before_train()
                for self.iter in range(start_iter, max_iter):
                    self.before_step()
                    self.run_step()
                    self.after_step()
                    if stop.requested:
                        raise KeyboardInterrupt
                    self._stop_if_signalled()
                self.iter += 1  # iteration == max_iter after a complete run
            except BaseException as e:
                if isinstance(e, KeyboardInterrupt):
                    self.interrupted = True
                    logger.warning("Interrupted at iteration %d", self.iter)
                elif isinstance(e, preemption.TrainingPreempted):
                    self.interrupted = True
                    logger.warning("Training %s", e)
                elif comm.is_peer_loss(e):  # the launcher names the rank that stopped; no traceback of ours
                    logger.error(
                        "A collective failed at iteration %d: another process of the job stopped (%s)",
                        self.iter,
                        str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__,
                    )
                else:
                    logger.exception("Exception during training at iteration %d:", self.iter)
                try:  # close writers etc., but never let a follow-up error hide the first one
                    self.after_train()
                except Exception:
                    logger.exception(
                        "A hook failed while stopping after the error above (that error is the one reported)"
                    )
                raise
            try:
                self.after_train()
                if stop.requested:  # Ctrl-C while the last hooks ran
                    raise KeyboardInterrupt
            except KeyboardInterrupt:
                self.interrupted = True
                logger.warning(
                    "Interrupted after the last iteration (during the final evaluation); the final checkpoint is saved"
                )
                raise

    def _stop_if_signalled(self) -> None:
        """After each iteration: when any rank got a checkpoint signal (preemption.py), every rank saves
        (the checkpointer hook) and raises TrainingPreempted after this same iteration."""
        signum = comm.max_over_ranks(preemption.requested_signal() or 0)
        if not signum:
            return
        saved = None
        for h in self._hooks:
            saved = h.save_for_restart() or saved
        comm.synchronize()  # the checkpoint is on disk before any process exits (a requeue stops them all)
        raise preemption.TrainingPreempted(signum, self.iter, saved)

    def before_train(self):
        for h in self._hooks:
            h.before_train()

    def after_train(self):
        """Every hook's after_train, even when one is stopped by Ctrl-C (re-raised after the others ran)."""
        self.storage.iter = self.iter
        stopped = None
        for h in self._hooks:
            try:
                h.after_train()
            except KeyboardInterrupt as e:
                stopped = e
        if stopped is not None:
            raise stopped

    def before_step(self):
        self.storage.iter = self.iter
        for h in self._hooks:
            h.before_step()

    def after_step(self):
        for h in self._hooks:
            h.after_step()

    def run_step(self):
        raise NotImplementedError

    def _hook_names(self) -> List[str]:
        """One name per hook: its class's qualified name, with "#2", "#3"... for repeats of a class."""
        names, seen = [], {}
        for h in self._hooks:
            base = type(h).__qualname__
            seen[base] = seen.get(base, 0) + 1
            names.append(base if seen[base] == 1 else f"{base}#{seen[base]}")
        return names

    def state_dict(self) -> dict:
        """{"iteration": last iteration run, "hooks": {name: state}} for the hooks whose state_dict is not empty."""
        states = {}
        for name, h in zip(self._hook_names(), self._hooks):
            state = h.state_dict()
            if state:
                states[name] = state
        return {"iteration": self.iter, "hooks": states}

    def load_state_dict(self, state: dict) -> None:
        """Give each registered hook its saved state (by name). A saved state no hook takes, or a hook with
        state that the checkpoint lacks (a hook added since), is logged and otherwise left alone."""
        saved = dict(state.get("hooks", {}))
        for name, h in zip(self._hook_names(), self._hooks):
            if name in saved:
                h.load_state_dict(saved.pop(name))
            elif h.state_dict():
                logger.warning("Resuming: the checkpoint has no state for hook %s; it starts afresh", name)
        for name in saved:
            logger.warning("Resuming: the checkpoint has state for hook %s, which this run does not have", name)


class SimpleTrainer(TrainerBase):
    """One step = next batch -> for each micro-batch: loss dict -> sum -> backward -> one optimizer step, in
    fp32, without waiting for the device: the losses stay on it until `flush()`.

    `micro_batches` k > 1 (gradient accumulation, accumulation.py): the step's batch is k micro-batches, each
    run on its virtual rank's random stream (`streams`, a VirtualRankStreams), its loss scaled by 1 / k, its
    gradient accumulated; under DDP all but the last micro-batch run in `no_sync`, so gradients are
    all-reduced once per step. The step's losses are the micro-batches' mean; the model's statistics
    (put_model_stats) those of micro-batch 0, as a multi-process run logs rank 0's.

    `flush()` runs every `flush_period` iterations (and at the first and last one, and whenever a hook is
    about to use the weights: the checkpointer before a save, evaluation before it runs): one all-reduce and
    one device-to-host copy bring the buffered losses of every iteration since the last flush to the
    event storage (rows only for iterations where (iter + 1) % gather_metric_period == 0), and the run stops
    with FloatingPointError when one of those losses, or a parameter now, is Inf/NaN, naming the first
    iteration and the loss or parameter. The weights in memory may have taken the bad steps since the last
    flush; no checkpoint ever holds them.
    """

    def __init__(
        self,
        model,
        data_loader,
        optimizer,
        gather_metric_period: int = 1,
        flush_period: int = 20,
        *,
        micro_batches: int = 1,
        streams=None,
    ):
        super().__init__()
        from .accumulation import VirtualRankStreams

        model.train()
        self.model = model
        self.data_loader = data_loader
        self._data_loader_iter_obj = None
        self.optimizer = optimizer
        self.gather_metric_period = gather_metric_period
        self.flush_period = max(int(flush_period), 1)
        self.micro_batches = max(int(micro_batches), 1)
        self.streams = streams if streams is not None else VirtualRankStreams(self.micro_batches, 0)
        if self.streams.k != self.micro_batches:
            raise ValueError(f"{self.streams.k} random streams for {self.micro_batches} micro-batches")
        self._pending = []  # (iteration, loss names, stacked losses on the device, data_time, ROI sampling stats)

    @property
    def _data_loader_iter(self):
        if self._data_loader_iter_obj is None:
            self._data_loader_iter_obj = iter(self.data_loader)
        return self._data_loader_iter_obj

    def _forward(self, data):
        return self.model(data)

    def _sync_context(self, last: bool):
        """DDP's no_sync for every micro-batch but the last: one gradient all-reduce per optimizer step."""
        if last or not hasattr(self.model, "no_sync"):
            return contextlib.nullcontext()
        return self.model.no_sync()

    def run_step(self):
        from .accumulation import split_micro_batches

        assert self.model.training, "[SimpleTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start
        k = self.micro_batches
        parts = split_micro_batches(data, k)
        self.optimizer.zero_grad(set_to_none=True)
        names, values, roi = None, [], None
        for j, part in enumerate(parts):
            with self.streams.of(j), self._sync_context(last=j == k - 1):
                loss_dict = self._forward(part)
                losses = sum(loss_dict.values())
                # the 1/k of an average over k micro-batches (exact in floating point when k is a power of two)
                self._backward(losses if k == 1 else losses * (1.0 / k))
            if names is None:
                names = tuple(loss_dict)
            elif tuple(loss_dict) != names:
                raise RuntimeError(f"micro-batch {j} returned losses {tuple(loss_dict)}, micro-batch 0 {names}")
            values.append(torch.stack([v.detach().float().reshape(()) for v in loss_dict.values()]))
            stats = get_event_storage().pop_model_stats() or None
            if j == 0:
                roi = stats
        self._step()
        step_values = values[0] if k == 1 else torch.stack(values).sum(dim=0) / k
        self._record(names, step_values, data_time, roi)
        if (self.iter + 1) % self.flush_period == 0 or self.iter in (self.start_iter, self.max_iter - 1):
            self.flush()

    def _backward(self, losses):
        losses.backward()

    def _step(self):
        self.optimizer.step()

    def _record(self, names, values: torch.Tensor, data_time: float, roi: Optional[Dict[str, object]]) -> None:
        """Buffer one step's losses (`values`, 0-d per name, on the device) and the model's statistics."""
        # the model's own statistics (ROI sampling counts), 0-d tensors on the device or numbers: read at the flush
        if roi is not None:
            roi = (
                tuple(roi),
                torch.stack(
                    [torch.as_tensor(v, dtype=torch.float32, device=values.device).reshape(()) for v in roi.values()]
                ),
            )
        self._pending.append((self.iter, names, values, data_time, roi))

    def flush(self) -> None:
        """Buffered losses -> event storage, and the finiteness check (see the class docstring). Every rank
        must call it at the same iterations (it all-reduces)."""
        pending, self._pending = self._pending, []
        storage = get_event_storage()
        current = storage.iter
        try:
            for names, group in _by_names(pending):
                table = torch.stack([g[2] for g in group])  # (iterations, losses), on the device
                if comm.get_world_size() > 1:
                    table = comm.reduce_dict({"t": table})["t"]  # average over ranks: a NaN on one rank reaches all
                table = table.cpu()
                finite = torch.isfinite(table)
                if not bool(finite.all()):
                    row = int((~finite.all(dim=1)).nonzero()[0])
                    it = group[row][0]
                    bad = [n for n, ok in zip(names, finite[row].tolist()) if not ok]
                    values = {n: float(v) for n, v in zip(names, table[row].tolist())}
                    raise FloatingPointError(
                        f"Loss became infinite or NaN at iteration {it}: non-finite {bad}; loss_dict = {values}. No checkpoint "
                        "holds it (the last one is untouched); lower SOLVER.BASE_LR or enable SOLVER.CLIP_GRADIENTS."
                    )
                if not comm.is_main_process():
                    continue
                with_roi = [g for g in group if g[4] is not None]
                roi_rows = iter(torch.stack([g[4][1] for g in with_roi]).cpu().tolist()) if with_roi else iter(())
                for (it, _, _, data_time, roi), row in zip(group, table.tolist()):
                    roi_row = next(roi_rows) if roi is not None else None
                    if (it + 1) % self.gather_metric_period != 0:
                        continue
                    storage.iter = it
                    storage.put_scalar("data_time", data_time)
                    storage.put_scalar("total_loss", sum(row))
                    storage.put_scalars(**dict(zip(names, row)))
                    if roi is not None:
                        storage.put_scalars(**dict(zip(roi[0], roi_row)))
        finally:
            storage.iter = current
        self._check_finite_params()

    def _check_finite_params(self) -> None:
        """Raise FloatingPointError naming the first parameter holding Inf/NaN (one fused norm over all of them)."""
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        if not named:
            return
        norms = torch._foreach_norm([p.detach() for _, p in named])
        if bool(torch.isfinite(torch.stack(norms)).all()):
            return
        bad = next(n for (n, _), v in zip(named, norms) if not torch.isfinite(v))
        raise FloatingPointError(
            f"Non-finite value of parameter {bad} after iteration {self.iter} (a non-finite gradient or an "
            f"overflowing step since the last check); no checkpoint holds it (the last one is untouched). "
            f"Lower SOLVER.BASE_LR or enable SOLVER.CLIP_GRADIENTS, then --resume."
        )


def _by_names(pending):
    """Consecutive entries of `pending` with the same loss names, as (names, entries) groups."""
    groups = []
    for entry in pending:
        if groups and groups[-1][0] == entry[1]:
            groups[-1][1].append(entry)
        else:
            groups.append((entry[1], [entry]))
    return groups


class AMPTrainer(SimpleTrainer):
    """Autocast training: bf16 (CPU or CUDA, no loss scaling) or fp16 (CUDA, with a GradScaler).

    GroupNorm computes its statistics and normalisation in float32 under autocast (the native CPU
    kernel accumulates in float32; on CUDA detgn's GN layer runs on a float32 copy). Which dtype a
    config gets on which hardware is decided in precision.py.
    """

    def __init__(
        self,
        model,
        data_loader,
        optimizer,
        dtype: str = "float16",
        device_type: str = "cuda",
        gather_metric_period: int = 1,
        flush_period: int = 20,
        *,
        micro_batches: int = 1,
        streams=None,
    ):
        super().__init__(
            model,
            data_loader,
            optimizer,
            gather_metric_period,
            flush_period,
            micro_batches=micro_batches,
            streams=streams,
        )
        if dtype not in ("float16", "bfloat16"):
            raise ConfigValueError(f"SOLVER.AMP.DTYPE must be float16 or bfloat16, got '{dtype}'")
        if device_type == "cpu" and dtype == "float16":
            raise ConfigValueError("fp16 autocast is CUDA only; use SOLVER.AMP.DTYPE bfloat16 on CPU")
        self.dtype = torch.float16 if dtype == "float16" else torch.bfloat16
        self.device_type = device_type
        self.grad_scaler = torch.amp.GradScaler(device_type) if self.dtype == torch.float16 else None

    def _forward(self, data):
        with torch.autocast(device_type=self.device_type, dtype=self.dtype):
            loss_dict = self.model(data)
        return {k: v.float() for k, v in loss_dict.items()}

    def _backward(self, losses):
        if self.grad_scaler is None:
            losses.backward()
        else:
            self.grad_scaler.scale(losses).backward()

    def _step(self):
        if self.grad_scaler is None:
            self.optimizer.step()
            return
        # fp16: once per step, after every micro-batch's backward: the scaler unscales the accumulated gradients
        # (clipping, in the optimizer's step, sees them unscaled) and skips a step with Inf/NaN gradients (and
        # lowers the scale), by design
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()

    def state_dict(self) -> dict:
        """TrainerBase's, plus the fp16 loss scale (GradScaler) when there is one."""
        state = super().state_dict()
        if self.grad_scaler is not None:
            state["grad_scaler"] = self.grad_scaler.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if self.grad_scaler is not None and "grad_scaler" in state:
            self.grad_scaler.load_state_dict(state["grad_scaler"])
