"""The best checkpoint: OUTPUT_DIR/model_best.pth holds the weights of the evaluation with the best value of
TEST.BEST_CHECKPOINT.METRIC (a key of metrics.json: "segm/AP" with one test set, "<dataset>/segm/AP" with several,
"segm_EMA/AP" for the EMA weights under MODEL_EMA.EVAL both), the largest with MODE "max", the smallest with "min".

It is written atomically like every checkpoint (and never becomes `last_checkpoint`, which --resume follows), with
the EMA weights when there are any; the best value and its iteration travel in every periodic checkpoint, so a
resumed run replaces model_best.pth only with a better evaluation. A metric no evaluation produces stops the run at
the first evaluation with one line naming the metrics there are. The end of training logs the best value, its
iteration and the file.
"""

import logging
import math
import os
from typing import Callable, Optional

from detgn.config.components import config_function
from detgn.config.config import CfgNode as CN
from detgn.config.rules import Rule, one_of
from detgn.utils import comm
from detgn.utils.errors import ConfigValueError

from .hooks import EvalHook, storage_keys
from .train_loop import HookBase

__all__ = ["add_best_checkpoint_config", "BestCheckpointer"]

logger = logging.getLogger(__name__)


def _needs_a_metric_and_test_data(c):
    b = c.TEST.BEST_CHECKPOINT
    if not b.METRIC and b.MODE != "max":
        return ("TEST.BEST_CHECKPOINT.MODE", b.MODE, "its default 'max' unless TEST.BEST_CHECKPOINT.METRIC is set")
    if b.METRIC and not c.DATASETS.TEST:
        return ("TEST.BEST_CHECKPOINT.METRIC", b.METRIC, "'' without DATASETS.TEST (nothing is evaluated)")
    return None


@config_function(
    rules={
        "TEST.BEST_CHECKPOINT.METRIC": Rule(
            lambda v: isinstance(v, str) and (v == "" or ("/" in v and not v.startswith("/") and not v.endswith("/"))),
            "'' (off) or a metrics.json key such as 'segm/AP' or '<dataset>/bbox/AP50'",
        ),
        "TEST.BEST_CHECKPOINT.MODE": one_of("max", "min"),
    },
    relations=[("a best checkpoint needs a metric and test data", _needs_a_metric_and_test_data)],
)
def add_best_checkpoint_config(cfg) -> None:
    """TEST.BEST_CHECKPOINT.* (module docstring)."""
    b = cfg.TEST.BEST_CHECKPOINT = CN()
    b.METRIC = ""  # keep OUTPUT_DIR/model_best.pth for this evaluation metric ("segm/AP"); "" = off
    b.MODE = "max"  # "max" (AP) or "min" (a loss-like metric)


class BestCheckpointer(HookBase):
    """After each evaluation (it runs after the evaluation hooks), saves model_best.pth when `metric` improved."""

    def __init__(self, checkpointer, metric: str, mode: str = "max", extra_state: Optional[Callable] = None):
        self.checkpointer, self.metric, self.mode = checkpointer, metric, mode
        self.extra_state = extra_state or (lambda: {})
        self.best: Optional[float] = None
        self.best_iter: Optional[int] = None
        self._seen = {}  # id(EvalHook) -> the results object last read from it

    def _better(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.best is None:
            return True
        return value > self.best if self.mode == "max" else value < self.best

    def _fresh_results(self) -> dict:
        """The metrics (as metrics.json keys) of the evaluations that ran since the last call."""
        flat = {}
        for hook in self.trainer.hooks:
            results = getattr(hook, "last_results", None)
            if isinstance(hook, EvalHook) and results and self._seen.get(id(hook)) is not results:
                self._seen[id(hook)] = results
                flat.update(storage_keys(results))
        return flat

    def _check(self, iteration: int) -> None:
        evaluated = self._fresh_results()
        if not evaluated:
            return  # no evaluation since the last step
        if self.metric not in evaluated:
            raise ConfigValueError(
                f"TEST.BEST_CHECKPOINT.METRIC = {self.metric!r}: the evaluation gave no such metric; there are "
                f"{', '.join(sorted(evaluated))[:400]}"
            )
        value = float(evaluated[self.metric])
        if not self._better(value):
            return
        self.best, self.best_iter = value, iteration
        self.checkpointer.save(
            "model_best",
            tag_last=False,
            iteration=iteration,
            best_metric={"name": self.metric, "value": value, "mode": self.mode},
            **self.extra_state(),
        )
        logger.info("New best %s = %.4f at iteration %d: %s", self.metric, value, iteration, self.path)

    @property
    def path(self) -> str:
        return os.path.join(self.checkpointer.save_dir or "", "model_best.pth")

    def after_step(self):
        if comm.is_main_process():
            self._check(self.trainer.iter)

    def after_train(self):
        if not comm.is_main_process():
            return
        if self.trainer.iter >= self.trainer.max_iter:  # the final evaluation ran just before (EvalHook.after_train)
            self._check(self.trainer.max_iter - 1)  # the iteration model_final.pth holds
        if self.best is not None:
            logger.info(
                "Best %s (%s): %.4f at iteration %d, weights in %s",
                self.metric,
                self.mode,
                self.best,
                self.best_iter,
                self.path,
            )

    def state_dict(self) -> dict:
        return {} if self.best is None else {"best": self.best, "iteration": self.best_iter, "metric": self.metric}

    def load_state_dict(self, state: dict) -> None:
        if state.get("metric") == self.metric:  # another metric starts afresh
            self.best, self.best_iter = state["best"], state["iteration"]
