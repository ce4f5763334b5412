"""Evaluator interface and `inference_on_dataset` (eval mode, no_grad, progress with ETA, timing)."""

import datetime
import logging
import time
from collections import OrderedDict
from contextlib import ExitStack, contextmanager
from typing import Dict, List, Optional, Union

import torch
from torch import nn

from detgn.utils import comm
from detgn.utils.interrupt import raise_if_stop_requested

__all__ = ["DatasetEvaluator", "DatasetEvaluators", "inference_on_dataset", "seconds_per_image"]

logger = logging.getLogger(__name__)
_now = time.perf_counter  # the clock of the progress lines (tests replace it)


def seconds_per_image(started: float, finished: List[float], window: int = 50) -> float:
    """Running wall time per image for the progress line, from the first image on.

    `finished[i]` is when image i was done (same clock as `started`). One image done: its own time.
    More: the mean over the last `window` images, leaving out the first one (model warm-up, first
    data loading), so neither the warm-up nor the elapsed total inflates the figure or the ETA.
    """
    if not finished:
        return 0.0
    if len(finished) == 1:
        return finished[0] - started
    recent = finished[-(window + 1) :]
    return (recent[-1] - recent[0]) / (len(recent) - 1)


class DatasetEvaluator:
    """reset() -> process(inputs, outputs) for every batch -> evaluate() -> {task: {metric: value}}."""

    def reset(self):
        pass

    def process(self, inputs: List[Dict], outputs: List[Dict]):
        pass

    def evaluate(self) -> Optional[Dict]:
        pass


class DatasetEvaluators(DatasetEvaluator):
    """Runs several evaluators; their result dicts are merged (task names must not clash)."""

    def __init__(self, evaluators: List[DatasetEvaluator]):
        self._evaluators = list(evaluators)

    def reset(self):
        for e in self._evaluators:
            e.reset()

    def process(self, inputs, outputs):
        for e in self._evaluators:
            e.process(inputs, outputs)

    def evaluate(self):
        results = OrderedDict()
        for e in self._evaluators:
            r = e.evaluate()
            if comm.is_main_process() and r is not None:
                for k, v in r.items():
                    if k in results:
                        raise KeyError(f"Two evaluators returned results for the same task '{k}'")
                    results[k] = v
        return results


@contextmanager
def _inference_context(model: nn.Module):
    training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(training)


def inference_on_dataset(
    model,
    data_loader,
    evaluator: Union[DatasetEvaluator, List[DatasetEvaluator], None],
    amp_dtype: Optional[torch.dtype] = None,
    log_period_s: float = 5.0,
):
    """Run `model` on every batch of `data_loader` and feed (inputs, outputs) to `evaluator`.

    Logs progress every `log_period_s` seconds: images done, the running s/img and the ETA from it
    (`seconds_per_image`); at the end, the per-image inference time excluding the first
    min(5, N - 1) warm-up images.
    Returns evaluator.evaluate() (on the main process; None elsewhere).
    """
    num_devices = comm.get_world_size()
    total = len(data_loader)
    batch = (
        getattr(getattr(data_loader, "batch_sampler", None), "batch_size", None)
        or getattr(data_loader, "batch_size", None)
        or 1
    )
    unit = "img" if batch == 1 else "batch"
    logger.info("Start inference on %d %s", total, "images" if batch == 1 else f"batches of {batch} images")
    if evaluator is None:
        evaluator = DatasetEvaluators([])
    elif isinstance(evaluator, list):
        evaluator = DatasetEvaluators(evaluator)
    evaluator.reset()
    num_warmup = min(5, total - 1)
    start = first_start = _now()
    total_compute = 0.0
    last_log = start
    finished = []  # when each image's batch was done (for the progress line)
    device_type = next(model.parameters()).device.type if any(True for _ in model.parameters()) else "cpu"
    with ExitStack() as stack:
        stack.enter_context(_inference_context(model))
        stack.enter_context(torch.no_grad())
        for idx, inputs in enumerate(data_loader):
            raise_if_stop_requested("evaluation")
            if idx == num_warmup:
                start = _now()
                total_compute = 0.0
            t0 = _now()
            if amp_dtype is not None:
                with torch.autocast(device_type=device_type, dtype=amp_dtype):
                    outputs = model(inputs)
            else:
                outputs = model(inputs)
            if device_type == "cuda":
                torch.cuda.synchronize()
            total_compute += _now() - t0
            evaluator.process(inputs, outputs)
            now = _now()
            finished.append(now)
            if now - last_log > log_period_s or idx == total - 1:
                per = seconds_per_image(first_start, finished)
                eta = datetime.timedelta(seconds=int(per * (total - idx - 1)))
                logger.info("Inference done %d/%d. %.4f s/%s. ETA=%s", idx + 1, total, per, unit, eta)
                last_log = now
    total_time = _now() - start
    n = max(total - num_warmup, 1)
    logger.info(
        "Total inference time: %s (%.6f s/%s per device, on %d devices)",
        datetime.timedelta(seconds=int(total_time)),
        total_time / n,
        unit,
        num_devices,
    )
    logger.info("Total inference pure compute time: %.6f s/%s per device", total_compute / n, unit)
    results = evaluator.evaluate()
    return results if results is not None else {}
