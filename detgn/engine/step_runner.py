"""The step runners: what one training iteration does (the batch, its micro-batches, forward, backward, the
optimizer step, the buffered losses), in float32 (StepRunner) or under autocast (AMPStepRunner). The loop
(train_loop.py) owns one and calls run_step() once per iteration."""

import contextlib
import time
from typing import Dict, Optional

import torch

from detgn.utils import comm
from detgn.utils.errors import ConfigValueError
from detgn.utils.events import get_event_storage

from .accumulation import VirtualRankStreams, split_micro_batches

__all__ = ["StepRunner", "AMPStepRunner"]


class StepRunner:
    """What one training iteration does, in float32. One step = next batch -> for each micro-batch: loss dict -> sum -> backward -> one optimizer step, in
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
        self.iter = self.start_iter = 0  # the iteration of the last step run, and the run's first

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

    def run_step(self, iteration: int, *, start_iter: int, max_iter: int) -> None:
        """Iteration `iteration` of a run from `start_iter` to `max_iter` - 1 (those decide when to flush)."""
        assert self.model.training, "[StepRunner] model was changed to eval mode!"
        self.iter, self.start_iter = iteration, start_iter
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
        if (iteration + 1) % self.flush_period == 0 or iteration in (start_iter, max_iter - 1):
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

    def state_dict(self) -> dict:
        """What the step needs to continue exactly after a resume (nothing in float32)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what state_dict() returned."""

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


class AMPStepRunner(StepRunner):
    """An autocast training step: bf16 (CPU or CUDA, no loss scaling) or fp16 (CUDA, with a GradScaler).

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
        """The fp16 loss scale (GradScaler), when there is one."""
        return {"grad_scaler": self.grad_scaler.state_dict()} if self.grad_scaler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.grad_scaler is not None and "grad_scaler" in state:
            self.grad_scaler.load_state_dict(state["grad_scaler"])
