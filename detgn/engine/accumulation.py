"""Gradient accumulation that equals the multi-process run.

An optimizer step takes SOLVER.IMS_PER_BATCH images summed over all processes (detectron2's meaning).
SOLVER.IMS_PER_DEVICE (m) sets the images of one forward/backward on one process; with W processes a
step is then k = IMS_PER_BATCH / (W x m) micro-batches per process. IMS_PER_DEVICE 0 (the default) means
m = IMS_PER_BATCH / W: one micro-batch, no accumulation.

Micro-batch j of process r stands for rank v = r x k + j of a job of V = W x k processes holding m images
each (its "virtual rank"):
- it gets the images and augmentations rank v would get (data/build.py: one sampler per virtual rank);
- the model's random sampling (anchors, ROIs) draws from rank v's stream (VirtualRankStreams below);
- its losses are normalised over its own m images, as each rank's are under DDP;
- its gradient enters the step with weight 1 / k on top of DDP's 1 / W, so the step sees the average
  over the V virtual ranks, as DDP over V processes gives it.
Batch-independent norms (GN, frozen BN, LN, none) are thus exact; BN and SyncBN compute their statistics
over one micro-batch instead of a rank's or the job's batch, which no accumulation can undo.
"""

import logging
from contextlib import contextmanager
from typing import Iterator, List, Optional, Sequence

import torch

from detgn.config.batch import micro_batches
from detgn.utils.errors import ConfigValueError

__all__ = [
    "micro_batches",
    "resolve_batch_layout",
    "batch_statistics_norms",
    "accumulation_norm_warning",
    "VirtualRankStreams",
    "split_micro_batches",
    "steps_note",
]

logger = logging.getLogger(__name__)

_BATCH_NORMS = ("BN", "SyncBN", "NaiveSyncBN")
_NORM_KEYS = ("MODEL.RESNETS.NORM", "MODEL.FPN.NORM", "MODEL.ROI_BOX_HEAD.NORM", "MODEL.ROI_MASK_HEAD.NORM")


def _norms(cfg) -> List[str]:
    out = []
    for key in _NORM_KEYS:
        node = cfg
        for part in key.split("."):
            node = node[part]
        out.append(str(node))
    return out


def batch_statistics_norms(cfg) -> List[str]:
    """The config's norm keys that name a norm with batch statistics (BN, SyncBN, NaiveSyncBN)."""
    return [k for k, v in zip(_NORM_KEYS, _norms(cfg)) if v in _BATCH_NORMS]


def resolve_batch_layout(cfg, world_size: int):
    """The config a job of `world_size` processes trains with, and its micro-batches per step.

    SOLVER.REFERENCE_WORLD_SIZE R > 0 names the number of processes the recipe was written for. When the job
    has another number W, SOLVER.REFERENCE_WORLD_SIZE_MODE decides:
      "accumulate": the recipe itself (IMS_PER_BATCH, BASE_LR, MAX_ITER, STEPS, ...) with IMS_PER_BATCH / R
                    images per micro-batch (R's batch per GPU) and R / W micro-batches per step; W > R
                    spreads the batch over the processes without accumulation;
      "rescale":    the linear scaling rule (solver.rescale_for_world_size): a different recipe;
      "auto":       "accumulate" unless a norm key names BN/SyncBN (their statistics follow the micro-batch),
                    then "rescale".
    An explicit SOLVER.IMS_PER_DEVICE is kept. Returns (cfg, k); cfg is a new config when anything changed.
    Raises ConfigValueError when the sizes do not divide.
    """
    from detgn.solver.build import rescale_for_world_size

    s = cfg.SOLVER
    ref = s.REFERENCE_WORLD_SIZE
    if ref and ref != world_size:
        mode = s.REFERENCE_WORLD_SIZE_MODE
        if mode == "auto":
            mode = "rescale" if batch_statistics_norms(cfg) else "accumulate"
        if mode == "rescale":
            cfg = rescale_for_world_size(cfg, world_size)
        elif s.IMS_PER_DEVICE == 0:
            if s.IMS_PER_BATCH % ref:
                raise ConfigValueError(
                    f"SOLVER.IMS_PER_BATCH {s.IMS_PER_BATCH} is not divisible by SOLVER.REFERENCE_WORLD_SIZE {ref}"
                )
            per_device = s.IMS_PER_BATCH // ref
            if world_size > ref:  # more processes than the recipe: fewer images each, no accumulation
                per_device = 0
            cfg = _with(cfg, IMS_PER_DEVICE=per_device)
    k = micro_batches(cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.IMS_PER_DEVICE, world_size)
    return cfg, k


def _with(cfg, **solver):
    cfg = cfg.clone()
    frozen = cfg.is_frozen()
    cfg.defrost()
    for k, v in solver.items():
        cfg.SOLVER[k] = v
    if frozen:
        cfg.freeze()
    return cfg


def accumulation_norm_warning(model: torch.nn.Module, k: int) -> Optional[str]:
    """One line when a model with batch-statistics norms (BN, SyncBN) trains with k > 1 micro-batches, else None."""
    if k <= 1:
        return None
    names = sorted({type(m).__name__ for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)})
    if not names:
        return None
    return (
        f"{'/'.join(names)} with {k} micro-batches per step: these norms take their statistics over one micro-batch, "
        f"not over a process's or the job's batch, so this run is not the multi-GPU run it stands for "
        f"(GN and frozen BN are exact); see GETTING_STARTED.md, 'Training on fewer GPUs'"
    )


def split_micro_batches(batch: list, k: int) -> List[list]:
    """A step's flat list of k x m mapped images -> k lists of m (micro-batch j = images j*m .. j*m + m - 1)."""
    if k == 1:
        return [batch]
    if len(batch) % k:
        raise ValueError(
            f"the training loader gave {len(batch)} images for a step of {k} micro-batches; a loader for "
            f"SOLVER.IMS_PER_DEVICE must give k x IMS_PER_DEVICE images per step (build_detection_train_loader does)"
        )
    m = len(batch) // k
    return [batch[j * m : (j + 1) * m] for j in range(k)]


class VirtualRankStreams:
    """The random streams of the k virtual ranks one process stands for (Python, numpy, torch CPU and CUDA).

    `with streams.of(j):` runs its body on virtual rank j's stream (the global generators hold it there) and
    saves the stream's state on exit; outside, the process's own state is back. With k == 1 it does nothing:
    the process's global stream is its one rank's stream, as without accumulation.
    """

    def __init__(self, k: int, first_rank: int):
        self.k = int(k)
        self.first_rank = int(first_rank)  # virtual rank of stream 0 (process rank x k)
        self._states: List[Optional[dict]] = [None] * self.k

    @property
    def ranks(self) -> range:
        return range(self.first_rank, self.first_rank + self.k)

    def seed(self, seed: Optional[int]) -> None:
        """Start every stream afresh: stream j from seed + its virtual rank (a random seed when seed is None)."""
        from detgn.checkpoint import get_rng_state

        from .setup import seed_all_rng

        own = get_rng_state()
        for j, v in enumerate(self.ranks):
            seed_all_rng(None if seed is None else seed + v)
            self._states[j] = get_rng_state()
        if self.k == 1:  # the global stream is stream 0
            return
        from detgn.checkpoint import set_rng_state

        set_rng_state(own)

    def load(self, states: Sequence[Optional[dict]]) -> None:
        """Streams from a checkpoint: states[j] for stream j; None keeps the stream as seeded."""
        from detgn.checkpoint import set_rng_state

        for j, state in enumerate(states):
            if state is None:
                continue
            if self.k == 1:
                set_rng_state(state)
            self._states[j] = state

    def states(self) -> List[dict]:
        """The k streams' states now (stream 0 first), as a checkpoint stores them."""
        from detgn.checkpoint import get_rng_state

        if self.k == 1:
            return [get_rng_state()]
        for j, state in enumerate(self._states):
            if state is None:
                with self.of(j):
                    pass
        return list(self._states)

    @contextmanager
    def of(self, j: int) -> Iterator[None]:
        if self.k == 1:
            yield
            return
        from detgn.checkpoint import get_rng_state, set_rng_state

        own = get_rng_state()
        if self._states[j] is None:  # never seeded (a trainer built without DefaultTrainer): from torch's seed + rank
            from .setup import seed_all_rng

            seed_all_rng((torch.initial_seed() + self.first_rank + j) % 2**31)
        else:
            set_rng_state(self._states[j])
        try:
            yield
        finally:
            self._states[j] = get_rng_state()
            set_rng_state(own)


def steps_note(k: int, per_device: int) -> str:
    """'' without accumulation, else ' (k micro-batches x m images per process)' for log lines."""
    return "" if k <= 1 else f" ({k} micro-batches x {per_device} image{'s' if per_device != 1 else ''} per process)"
