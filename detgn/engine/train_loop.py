"""The training loop: TrainerBase runs its step runner (step_runner.py) from start_iter to max_iter - 1 with the
hooks around each step, and stops between steps on Ctrl-C or a checkpoint signal (utils/interrupt.py).
SimpleTrainer and AMPTrainer are a loop with a float32 or an autocast runner, for training outside the config
(DefaultTrainer builds its own runner from the config)."""

import logging
import weakref
from typing import List, Optional, Tuple

from detgn.utils import comm, interrupt
from detgn.utils.events import EventStorage

from .step_runner import AMPStepRunner, StepRunner

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
        """Called on every rank when the run stops for a restart (utils/interrupt.py), after the iteration's
        after_step; a checkpointer saves here and returns the path."""
        return None

    def state_dict(self) -> dict:
        """What this hook needs to continue exactly after a resume (an empty dict: nothing). The trainer's
        checkpoints hold it under "trainer" -> "hooks" -> the hook's name (see TrainerBase.state_dict)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what state_dict() returned; called on resume, before before_train."""


class TrainerBase:
    """Runs `run_step` from start_iter to max_iter - 1, calling the hooks around each step. `run_step` runs the
    step runner `self.runner` (a StepRunner), or is overridden by a subclass that has none."""

    runner: Optional[StepRunner] = None

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
        a checkpoint. The step runner buffers its losses (StepRunner.flush); without one nothing is buffered."""
        if self.runner is not None:
            self.runner.flush()

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
            interrupt.stop_between_steps(),
            interrupt.checkpoint_on_signals(),
        ):
            try:
                self.before_train()
                for self.iter in range(start_iter, max_iter):
                    self.before_step()
                    self.run_step()
                    self.after_step()
                    if interrupt.stop_requested():
                        raise KeyboardInterrupt
                    self._stop_if_signalled()
                self.iter += 1  # iteration == max_iter after a complete run
            except BaseException as e:
                if isinstance(e, KeyboardInterrupt):
                    self.interrupted = True
                    logger.warning("Interrupted at iteration %d", self.iter)
                elif isinstance(e, interrupt.TrainingPreempted):
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
                if interrupt.stop_requested():  # Ctrl-C while the last hooks ran
                    raise KeyboardInterrupt
            except KeyboardInterrupt:
                self.interrupted = True
                logger.warning(
                    "Interrupted after the last iteration (during the final evaluation); the final checkpoint is saved"
                )
                raise

    def _stop_if_signalled(self) -> None:
        """After each iteration: when any rank got a checkpoint signal (utils/interrupt.py), every rank saves
        (the checkpointer hook) and raises TrainingPreempted after this same iteration."""
        signum = comm.max_over_ranks(interrupt.requested_signal() or 0)
        if not signum:
            return
        saved = None
        for h in self._hooks:
            saved = h.save_for_restart() or saved
        comm.synchronize()  # the checkpoint is on disk before any process exits (a requeue stops them all)
        raise interrupt.TrainingPreempted(signum, self.iter, saved)

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
        if self.runner is None:
            raise NotImplementedError(f"{type(self).__name__} has no step runner: set self.runner or override run_step")
        self.runner.run_step(self.iter, start_iter=self.start_iter, max_iter=self.max_iter)

    def _hook_names(self) -> List[str]:
        """One name per hook: its class's qualified name, with "#2", "#3"... for repeats of a class."""
        names, seen = [], {}
        for h in self._hooks:
            base = type(h).__qualname__
            seen[base] = seen.get(base, 0) + 1
            names.append(base if seen[base] == 1 else f"{base}#{seen[base]}")
        return names

    def state_dict(self) -> dict:
        """{"iteration": last iteration run, "hooks": {name: state}} for the hooks whose state_dict is not empty,
        and "loop": the step runner's state (the fp16 loss scale) when it has one."""
        states = {}
        for name, h in zip(self._hook_names(), self._hooks):
            state = h.state_dict()
            if state:
                states[name] = state
        out = {"iteration": self.iter, "hooks": states}
        loop = self.runner.state_dict() if self.runner is not None else {}
        if loop:
            out["loop"] = loop
        return out

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
        if self.runner is not None and state.get("loop"):
            self.runner.load_state_dict(state["loop"])


class SimpleTrainer(TrainerBase):
    """The loop with a float32 StepRunner: SimpleTrainer(model, data_loader, optimizer, ...) takes the arguments of
    `runner_class` (step_runner.py), then train(start_iter, max_iter)."""

    runner_class = StepRunner

    def __init__(self, model, data_loader, optimizer, *args, **kwargs):
        super().__init__()
        self.runner = self.runner_class(model, data_loader, optimizer, *args, **kwargs)

    @property
    def model(self):
        return self.runner.model

    @property
    def optimizer(self):
        return self.runner.optimizer

    @property
    def data_loader(self):
        return self.runner.data_loader


class AMPTrainer(SimpleTrainer):
    """The loop with an autocast AMPStepRunner: dtype "bfloat16" (CPU or CUDA) or "float16" (CUDA, GradScaler)."""

    runner_class = AMPStepRunner
