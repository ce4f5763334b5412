"""DefaultTrainer: everything a training run needs, built from the config (model, optimizer, scheduler, data,
checkpoints, hooks, writers, evaluation), on the loop of train_loop.py with a step runner of its own."""

import inspect
import logging
import os

from torch.nn.parallel import DistributedDataParallel

from detgn.checkpoint import DetectionCheckpointer
from detgn.config import ConfigError
from detgn.data import build_detection_train_loader, get_detection_dataset_dicts
from detgn.modeling import build_model
from detgn.solver import build_lr_scheduler, build_optimizer, describe_param_groups
from detgn.utils import comm
from detgn.utils.events import CommonMetricPrinter, JSONWriter, TensorboardWriter

from . import hooks
from .accumulation import VirtualRankStreams, accumulation_norm_warning, resolve_batch_layout, steps_note
from .best_checkpoint import BestCheckpointer
from .ema import EMAHook, ModelEMA, evaluate_weights
from .evaluate import build_evaluator, run_test, run_test_with_tta
from .precision import log_precision, resolve_precision
from .trackers import build_tracker_writers
from .resume import (
    check_every_rank_sees_the_checkpoint,
    check_resumed_model,
    optimizer_settings,
    reapply_solver_settings,
    rng_states_of_this_process,
)
from .setup import check_semantic_classes, check_thing_classes, describe_model, log_data_summary
from .step_runner import AMPStepRunner, StepRunner
from .train_loop import TrainerBase

__all__ = ["DefaultTrainer"]

_DDP_ARGS = set(inspect.signature(DistributedDataParallel.__init__).parameters)


class DefaultTrainer(TrainerBase):
    """Builds everything from the config and trains with the standard hooks.

    trainer = DefaultTrainer(cfg)
    trainer.register_hooks([MyHook()])  # optional: they run before the checkpointer and the writers
    trainer.resume_or_load(resume=args.resume)
    trainer.train()

    It is the TrainerBase the hooks see (`hook.trainer`: iter, max_iter, storage, flush()); each step is
    run by its step runner (`build_step_runner`: a StepRunner or AMPStepRunner, as the precision policy
    decides). Its state_dict (the hooks' states and the runner's fp16 loss scale) is saved in every
    checkpoint under "trainer" and given back to the hooks on resume.
    """

    def __init__(self, cfg, verbose: bool = False):
        super().__init__()
        self.logger = logging.getLogger("detgn.trainer")
        cfg, self.micro_batches = resolve_batch_layout(cfg, comm.get_world_size())
        self.cfg = cfg
        # micro-batch j of this process is rank (rank x k + j) of a job of world x k processes (accumulation.py)
        self.streams = VirtualRankStreams(self.micro_batches, comm.get_rank() * self.micro_batches)
        self.train_dicts = self.load_train_data()  # fail fast on bad data paths, before the model is built
        self.model = build_model(cfg)
        describe_model(cfg, self.model, verbose=verbose)
        s = cfg.SOLVER
        warning = accumulation_norm_warning(self.model, self.micro_batches)
        if warning:
            self.logger.warning(warning)
        self.logger.info(
            "Schedule: %d iterations x %d images%s, base LR %g, LR steps %s, warm-up %d iterations; "
            "checkpoint every %d, evaluation %s",
            s.MAX_ITER,
            s.IMS_PER_BATCH,
            steps_note(self.micro_batches, s.IMS_PER_BATCH // (comm.get_world_size() * self.micro_batches)),
            s.BASE_LR,
            tuple(s.STEPS),
            s.WARMUP_ITERS,
            s.CHECKPOINT_PERIOD,
            f"every {cfg.TEST.EVAL_PERIOD} and at the end" if cfg.TEST.EVAL_PERIOD > 0 else "at the end",
        )
        self.optimizer = build_optimizer(cfg, self.model)
        self.logger.info(describe_param_groups(self.optimizer))
        self.scheduler = build_lr_scheduler(cfg, self.optimizer)
        self.device = next(self.model.parameters()).device
        self.runner = None  # the StepRunner that runs each iteration, built by train()
        self.checkpointer = DetectionCheckpointer(
            self.model, cfg.OUTPUT_DIR, optimizer=self.optimizer, scheduler=self.scheduler
        )
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.data_seed = cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed()
        self._resumed_state = None  # the checkpoint's "trainer" entry, given to the hooks and the loop in train()
        self.ema = None  # the ModelEMA (MODEL_EMA.ENABLED), started from the loaded weights (engine/ema.py)
        self._rng_state = None

    def load_train_data(self):
        """The training records (detection dataset dicts of DATASETS.TRAIN), logged with the test sets' sizes."""
        dicts = get_detection_dataset_dicts(
            self.cfg.DATASETS.TRAIN, filter_empty=self.cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS
        )
        log_data_summary(self.cfg, dicts)
        for name in self.cfg.DATASETS.TRAIN:  # the datasets are loaded: their classes are known
            check_thing_classes(self.cfg, name)
            check_semantic_classes(self.cfg, name)
        return dicts

    def has_evaluation(self) -> bool:
        return bool(self.cfg.DATASETS.TEST)

    def resume_or_load(self, resume: bool = True) -> None:
        """resume=True and a checkpoint in OUTPUT_DIR: restore everything and continue after its
        iteration; otherwise load MODEL.WEIGHTS into the model only."""
        if resume and comm.get_world_size() > 1:
            check_every_rank_sees_the_checkpoint(self.cfg.OUTPUT_DIR)
        resuming = resume and self.checkpointer.has_checkpoint()
        from_config = optimizer_settings(self.optimizer), list(self.scheduler.base_lrs)
        ckpt = self.checkpointer.resume_or_load(self.cfg.MODEL.WEIGHTS, resume=resume)
        if resuming:
            path = self.checkpointer.get_checkpoint_file()
            check_resumed_model(self.checkpointer.last_report, path, self.cfg.OUTPUT_DIR)
            self.start_iter = ckpt.get("iteration", -1) + 1
            if self.start_iter > self.max_iter:
                raise ConfigError(
                    f"--resume: {path} has trained {self.start_iter} iterations, more than SOLVER.MAX_ITER "
                    f"{self.max_iter}; raise SOLVER.MAX_ITER to train on, or use --eval-only MODEL.WEIGHTS {path}"
                )
            self.data_seed = ckpt.get("data_seed", self.data_seed)
            # detgn before hooks had state saved the loop's loss scale alone, as "amp"
            self._resumed_state = ckpt.get("trainer") or {"hooks": {}, "loop": ckpt.get("amp") or {}}
            self._rng_state = rng_states_of_this_process(ckpt, self.streams.first_rank, self.micro_batches, self.logger)
            reapply_solver_settings(
                self.optimizer, self.scheduler, *from_config, start_iter=self.start_iter, logger=self.logger
            )
            if self.start_iter == self.max_iter:
                self.logger.info(
                    "Resuming: %s finished all SOLVER.MAX_ITER %d iterations; nothing left to train (raise "
                    "SOLVER.MAX_ITER to train longer)",
                    path,
                    self.max_iter,
                )
            else:
                self.logger.info("Resuming from iteration %d", self.start_iter)
        self._start_ema(ckpt if resuming else None)

    def _start_ema(self, ckpt) -> None:
        """The average of the weights: the resumed checkpoint's, else a copy of the weights loaded now."""
        if not self.cfg.MODEL_EMA.ENABLED:
            return
        self.ema = ModelEMA(self.model)
        if ckpt is not None and ckpt.get("ema") is not None:
            self.ema.load_state_dict(ckpt["ema"])
        elif ckpt is not None:
            self.logger.warning(
                "Resuming: the checkpoint has no EMA weights (EMA was off); the average starts from its weights"
            )

    def _evaluate(self, run, tta: bool = False):
        """run(task_suffix) on the weights MODEL_EMA.EVAL names (the raw ones without EMA); TTA once, on the average
        when it is evaluated."""
        mode = self.cfg.MODEL_EMA.EVAL
        return evaluate_weights("ema" if tta and mode == "both" else mode, self.model, self.ema, run)

    def build_hooks(self):
        """Timer, LR schedule, evaluation, checkpoints, writers, in that order: an evaluation's
        results and the iteration's metrics row reach metrics.json before its checkpoint is saved."""
        cfg = self.cfg
        ret = [hooks.IterationTimer(), hooks.LRScheduler(self.optimizer, self.scheduler)]
        if self.ema is not None:  # after each step, before the evaluation and the checkpoint of that step
            e = cfg.MODEL_EMA
            ret.insert(1, EMAHook(self.ema, self.model, decay=e.DECAY, warmup_iters=e.WARMUP_ITERS))
        if self.has_evaluation():
            ret.append(hooks.EvalHook(cfg.TEST.EVAL_PERIOD, lambda: self._evaluate(self._test)))
            if cfg.TEST.AUG.ENABLED:  # after the last iteration only, as detectron2's train_net
                ret.append(
                    hooks.EvalHook(0, lambda: self._evaluate(lambda _: self.test_with_TTA(cfg, self.model), True))
                )
        if cfg.TEST.BEST_CHECKPOINT.METRIC:  # after the evaluations, so that it reads their results
            b = cfg.TEST.BEST_CHECKPOINT
            extra = (lambda: {"ema": self.ema.state_dict()}) if self.ema is not None else None
            ret.append(BestCheckpointer(self.checkpointer, b.METRIC, b.MODE, extra_state=extra))
        writers = self.build_writers() if comm.is_main_process() else []
        json_writers = [w for w in writers if w.before_checkpoint]
        ret.append(
            hooks.PeriodicCheckpointer(
                self.checkpointer,
                cfg.SOLVER.CHECKPOINT_PERIOD,
                self.max_iter,
                cfg.SOLVER.MAX_TO_KEEP,
                extra_state=self._checkpoint_state,
                before_save=lambda: [w.write() for w in json_writers],
            )
        )
        if writers:
            ret.append(hooks.PeriodicWriter(writers, period=cfg.LOG_PERIOD))
        return ret

    def _test(self, task_suffix: str):
        if not task_suffix:  # detectron2's signature, which subclasses override: test(cls, cfg, model, evaluators=None)
            return self.test(self.cfg, self.model)
        return self.test(self.cfg, self.model, task_suffix=task_suffix)

    def _checkpoint_state(self) -> dict:
        """What a checkpoint holds besides the model, optimizer and scheduler (the EMA weights as "ema")."""
        state = {"data_seed": self.data_seed, "trainer": self.state_dict()}
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def build_writers(self) -> list:
        """The EventWriters of the main process (utils/events.py): the console line, metrics.json, TensorBoard and the
        trackers the config enables (engine/trackers.py).
        Override to add or replace a backend:

            class MyTrainer(DefaultTrainer):
                def build_writers(self):
                    return super().build_writers() + [MyWriter()]
        """
        return [
            CommonMetricPrinter(
                self.max_iter,
                step_note=f"{self.micro_batches} micro-batches" if self.micro_batches > 1 else "",
            ),
            JSONWriter(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json"), self.start_iter),
            TensorboardWriter(self.cfg.OUTPUT_DIR),
        ] + build_tracker_writers(self.cfg, self.start_iter)  # W&B, MLflow: WANDB.ENABLED, MLFLOW.ENABLED

    def build_train_loader(self):
        return build_detection_train_loader(
            self.cfg, start_iter=self.start_iter, seed=self.data_seed, dataset=self.train_dicts
        )

    def _wrap(self, model):
        if comm.get_world_size() > 1:
            ids = [comm.get_local_rank()] if self.device.type == "cuda" else None
            # buffers (BN statistics) stay per rank during training; torch >= 2.12 names that forward_sync_buffers
            no_sync = (
                {"forward_sync_buffers": False} if "forward_sync_buffers" in _DDP_ARGS else {"broadcast_buffers": False}
            )
            return DistributedDataParallel(model, device_ids=ids, **no_sync)
        return model

    def build_step_runner(self, model, loader):
        """StepRunner (float32) or AMPStepRunner, as the precision policy decides for this config and machine."""
        cfg = self.cfg
        # rank 0 first: where the CPU's bf16 speed is measured (precision.py), it measures and caches once, and the
        # other ranks read its decision instead of timing side by side
        several = comm.get_world_size() > 1
        if several and not comm.is_main_process():
            comm.synchronize()
        precision = resolve_precision(cfg.SOLVER.AMP.ENABLED, cfg.SOLVER.AMP.DTYPE, self.device.type)
        if several and comm.is_main_process():
            comm.synchronize()
        log_precision(precision, "training")
        steps = dict(flush_period=cfg.LOG_PERIOD, micro_batches=self.micro_batches, streams=self.streams)
        if precision.dtype is None:
            return StepRunner(model, loader, self.optimizer, **steps)
        return AMPStepRunner(model, loader, self.optimizer, dtype=precision.name, device_type=self.device.type, **steps)

    def rng_states(self):
        """The random states of this process's ranks (one per micro-batch), as checkpoints store them."""
        return self.streams.states()

    def train(self):
        """Train from start_iter to SOLVER.MAX_ITER with the standard hooks (build_hooks) and those registered
        before; returns the last evaluation's results (None without evaluation). Runs once."""
        if self.runner is not None:
            raise RuntimeError("DefaultTrainer.train() runs once; build a new DefaultTrainer to train again")
        if self.cfg.MODEL_EMA.ENABLED and self.ema is None:  # train() without resume_or_load()
            self._start_ema(None)
        self.runner = self.build_step_runner(self._wrap(self.model), self.build_train_loader())
        # the hooks registered before train() run after the timer, LR and evaluation hooks and before the
        # checkpointer, so that each checkpoint holds their state after the same iteration as the model's
        registered, self._hooks = list(self._hooks), []
        self.register_hooks(self.build_hooks())
        at = next((i for i, h in enumerate(self._hooks) if isinstance(h, hooks.PeriodicCheckpointer)), len(self._hooks))
        self._hooks[at:at] = registered
        if self._resumed_state is not None:
            self.load_state_dict(self._resumed_state)
        # each rank's random stream (ROI / anchor sampling) starts from SEED + rank, or, on resume, continues
        # exactly as it was right after the saved iteration
        self.streams.seed(None if self.cfg.SEED < 0 else self.cfg.SEED)
        if self._rng_state is not None:
            self.streams.load(self._rng_state)
        super().train(self.start_iter, self.max_iter)
        eval_hooks = [h for h in self.hooks if isinstance(h, hooks.EvalHook)]
        return eval_hooks[0].last_results if eval_hooks else None

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        """The evaluator(s) of one test set (engine/evaluate.py); override to evaluate otherwise."""
        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def test(cls, cfg, model, evaluators=None, task_suffix: str = ""):
        """Evaluate on every DATASETS.TEST; returns {dataset: {task: {metric: value}}}, also for one dataset
        (evaluate.run_test; evaluators: None builds them with cls.build_evaluator)."""
        return run_test(cfg, model, evaluators, task_suffix, build=cls.build_evaluator)

    @classmethod
    def test_with_TTA(cls, cfg, model):
        """test() with test-time augmentation (TEST.AUG.*): tasks renamed task_TTA, files in OUTPUT_DIR/inference_TTA."""
        return run_test_with_tta(cfg, model, build=cls.build_evaluator)
