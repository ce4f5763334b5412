"""The resume policy: what a training run takes back from its checkpoint and what the config decides.

The model, optimizer and scheduler state, the iteration, the data order and each rank's random streams come
back exactly; the solver's settings (momentum, weight decay, base LR) are the config's, with a warning for each
that changed; a checkpoint that does not fit the model, or that the ranks do not all see, is refused in one line.
"""

import os
import socket

from detgn.config import ConfigError
from detgn.utils import comm

__all__ = [
    "optimizer_settings",
    "reapply_solver_settings",
    "check_resumed_model",
    "check_every_rank_sees_the_checkpoint",
    "rng_states_of_this_process",
]


_SOLVER_KEYS = {
    "momentum": "SOLVER.MOMENTUM",
    "nesterov": "SOLVER.NESTEROV",
    "weight_decay": "SOLVER.WEIGHT_DECAY(_NORM/_BIAS/_EMBED, BACKBONE_WEIGHT_DECAY_FACTOR)",
    "dampening": "(SGD dampening)",
    "betas": "SOLVER.ADAMW.BETAS",
    "eps": "SOLVER.ADAMW.EPS",
}


def optimizer_settings(optimizer):
    """The config's settings of each param group (those of its optimizer: SGD's or AdamW's)."""
    return [{k: g[k] for k in _SOLVER_KEYS if k in g} for g in optimizer.param_groups]


def reapply_solver_settings(optimizer, scheduler, settings, base_lrs, *, start_iter: int, logger) -> None:
    """torch restores each param group's momentum/weight decay and the scheduler's base LRs from the
    checkpoint; the config's values win, with a WARNING for each that changed (a resume with a new
    SOLVER.BASE_LR trains at that LR from `start_iter` on, following the schedule)."""
    changed = set()
    for group, wanted in zip(optimizer.param_groups, settings):
        for k, v in wanted.items():
            if group.get(k) != v:
                changed.add((_SOLVER_KEYS[k], group.get(k), v))
                group[k] = v
    old = list(scheduler.base_lrs)
    if old != base_lrs:
        changed.add(("SOLVER.BASE_LR (and BIAS_LR_FACTOR, BACKBONE_LR_FACTOR)", max(old), max(base_lrs)))
        scheduler.base_lrs = list(base_lrs)
        for group, lr in zip(optimizer.param_groups, base_lrs):
            group["initial_lr"] = lr
    for group, lr in zip(optimizer.param_groups, scheduler.get_lr()):
        group["lr"] = lr
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]
    for key, was, now in sorted(changed, key=str):
        logger.warning(
            "--resume: %s changed since the checkpoint (%s -> %s); training continues with %s from iteration %d",
            key,
            was,
            now,
            now,
            start_iter,
        )


def check_resumed_model(report, path: str, output_dir: str) -> None:
    """A resumed checkpoint must fit the model exactly (else the optimizer state fails later, mid-step)."""
    if not report:
        return
    problems = [f"{k}: checkpoint {tuple(a)} vs config {tuple(b)}" for k, a, b in report["shape_mismatch"][:2]]
    problems += [f"{k} missing from the checkpoint" for k in report["missing"][:2]]
    if problems:
        raise ConfigError(
            f"--resume: {path} does not fit the model this config builds ({'; '.join(problems)}); resume with the "
            f"config it was trained with ({os.path.join(output_dir, 'config.yaml')}), or fine-tune from it with "
            f"MODEL.WEIGHTS {path} and a new OUTPUT_DIR"
        )


def check_every_rank_sees_the_checkpoint(output_dir: str) -> None:
    """Before a multi-process resume: every rank must find the same checkpoint (name and size) in OUTPUT_DIR."""
    from detgn.checkpoint.resume import check_same_view, find_resumable

    path = find_resumable(output_dir)[0]
    mine = f"{os.path.basename(path)} ({os.path.getsize(path)} bytes)" if path else None
    check_same_view(output_dir, comm.all_gather((socket.gethostname(), mine)))


def rng_states_of_this_process(ckpt: dict, first_rank: int, k: int, logger):
    """The RNG states the k virtual ranks first_rank .. first_rank + k - 1 of this process had at the checkpoint
    (its rng_per_rank[v]; accumulation.py), None for a rank the checkpoint has none of. A checkpoint of another
    number of ranks resumes the streams it has: with more ranks now, the extra ones keep their fresh seeds
    (SEED + rank); a checkpoint with one state only (older detgn) restores rank 0's only, so no two ranks ever draw
    the same random numbers."""
    per_rank = ckpt.get("rng_per_rank")
    if not per_rank:
        per_rank = [ckpt["rng"]] if ckpt.get("rng") is not None else []
    virtual_world = comm.get_world_size() * k
    if len(per_rank) != virtual_world and comm.get_rank() == 0:
        ranks = (
            f"{virtual_world} processes"
            if k == 1
            else f"{virtual_world} ranks ({comm.get_world_size()} x {k} micro-batches)"
        )
        logger.info(
            "Resuming %s from a checkpoint of %d: the images and their augmentations continue as before; the model's "
            "random sampling (anchors, proposals) continues the saved streams of ranks < %d only",
            ranks,
            len(per_rank),
            min(virtual_world, len(per_rank)),
        )
    return [per_rank[v] if v < len(per_rank) else None for v in range(first_rank, first_rank + k)]
