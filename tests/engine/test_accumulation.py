"""Gradient accumulation, piece by piece (in process): the batch layout and its refusals, the loader's micro-batches,
the virtual ranks' random streams, and the step (1/k weights, clipping and AMP once per step, non-finite losses,
Ctrl-C). The end-to-end equivalence with more processes: test_accumulation_equivalence.py."""

import json
import os
import signal

import pytest
import torch
from torch import nn

from detgn.config import get_cfg
from detgn.config.batch import micro_batches
from detgn.engine.accumulation import (
    VirtualRankStreams,
    accumulation_norm_warning,
    resolve_batch_layout,
    split_micro_batches,
)
from detgn.engine.setup import seed_all_rng
from detgn.engine.hooks import PeriodicCheckpointer
from detgn.engine.train_loop import AMPTrainer, HookBase, SimpleTrainer
from detgn.utils.errors import ConfigValueError

from tests.util import REPO, run_tool_here

from .util import QUICK


def test_micro_batches_and_the_values_that_would_divide():
    assert micro_batches(16, 0, 8) == 1 and micro_batches(16, 2, 1) == 8 and micro_batches(16, 2, 4) == 2
    with pytest.raises(ConfigValueError, match=r"IMS_PER_DEVICE = 3: .* 8 images .* use one of 1, 2, 4, 8$"):
        micro_batches(16, 3, 2)
    with pytest.raises(ConfigValueError, match=r"IMS_PER_BATCH = 15: .* processes \(2\); use a multiple of 2 \(e.g."):
        micro_batches(15, 0, 2)
    with pytest.raises(ConfigValueError, match=r"IMS_PER_DEVICE = 4: must divide the 2 images .* use one of 1, 2$"):
        micro_batches(16, 4, 8)


def test_sizes_that_do_not_divide_are_refused_when_the_config_is_read(capsys, tmp_path):
    out = tmp_path / "never"
    args = ["--config-file", QUICK, "--num-gpus", "2", "SOLVER.IMS_PER_BATCH", "8", "SOLVER.IMS_PER_DEVICE", "3"]
    status, _, err = run_tool_here("train_net", args + ["OUTPUT_DIR", str(out)], capsys)
    assert status == 2 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == (
        "error: SOLVER.IMS_PER_DEVICE = 3: must divide the 4 images of each of the 2 process(es) per step "
        "(SOLVER.IMS_PER_BATCH 8 / 2); use one of 1, 2, 4"
    )
    assert not out.exists()
    # with a reference world size too: the layout the job would get is checked (8 images on 3 processes)
    status, _, err = run_tool_here(
        "train_net",
        ["--config-file", QUICK, "--num-gpus", "3", "SOLVER.IMS_PER_BATCH", "8", "SOLVER.REFERENCE_WORLD_SIZE", "4"]
        + ["OUTPUT_DIR", str(out)],
        capsys,
    )
    assert status == 2 and "SOLVER.IMS_PER_BATCH = 8: must be divisible by the number of processes (3)" in err


def _recipe(**solver):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "GN", "mask_rcnn_R_50_FPN_3x_gn.yaml"))
    for k, v in solver.items():
        cfg.SOLVER[k] = v
    return cfg


def test_reference_world_size_accumulates_or_rescales():
    cfg = _recipe(REFERENCE_WORLD_SIZE=8)
    assert cfg.SOLVER.REFERENCE_WORLD_SIZE_MODE == "auto"
    # GN: the 16-image recipe on 1 GPU as 8 micro-batches of 2, every other value as written
    one, k = resolve_batch_layout(cfg, 1)
    assert k == 8 and one.SOLVER.IMS_PER_DEVICE == 2 and one.SOLVER.IMS_PER_BATCH == 16
    assert (one.SOLVER.BASE_LR, one.SOLVER.MAX_ITER, tuple(one.SOLVER.STEPS)) == (0.02, 270000, (210000, 250000))
    assert resolve_batch_layout(cfg, 2)[1] == 4 and resolve_batch_layout(cfg, 8) == (cfg, 1)
    more, k = resolve_batch_layout(cfg, 16)  # more processes than the recipe: 1 image each, no accumulation
    assert k == 1 and more.SOLVER.IMS_PER_DEVICE == 0
    # the linear scaling rule, asked for (another recipe: batch, LR and schedule x 1/8)
    cfg1, k = resolve_batch_layout(_recipe(REFERENCE_WORLD_SIZE=8, REFERENCE_WORLD_SIZE_MODE="rescale"), 1)
    assert k == 1 and cfg1.SOLVER.IMS_PER_BATCH == 2 and cfg1.SOLVER.BASE_LR == 0.0025
    assert cfg1.SOLVER.MAX_ITER == 2160000
    # ... or picked by "auto" for batch-statistics norms
    bn = _recipe(REFERENCE_WORLD_SIZE=8)
    bn.MODEL.RESNETS.NORM = "SyncBN"
    cfg1, k = resolve_batch_layout(bn, 2)
    assert k == 1 and cfg1.SOLVER.IMS_PER_BATCH == 4 and cfg1.SOLVER.MAX_ITER == 270000 * 4
    # an explicit IMS_PER_DEVICE is kept
    assert resolve_batch_layout(_recipe(REFERENCE_WORLD_SIZE=8, IMS_PER_DEVICE=1), 1)[1] == 16


def test_batch_statistics_norms_warn_in_one_line():
    bn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.SyncBatchNorm(4), nn.BatchNorm2d(4))
    line = accumulation_norm_warning(bn, 4)
    assert line.startswith("BatchNorm2d/SyncBatchNorm with 4 micro-batches per step: ") and "\n" not in line
    assert "GN and frozen BN are exact" in line
    assert accumulation_norm_warning(bn, 1) is None
    assert accumulation_norm_warning(nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4)), 4) is None


def _train_cfg(**solver):
    cfg = get_cfg()
    cfg.merge_from_file(QUICK)
    cfg.SOLVER.IMS_PER_BATCH = 4
    cfg.DATALOADER.ASPECT_RATIO_GROUPING = True
    for k, v in solver.items():
        cfg.SOLVER[k] = v
    return cfg


def test_micro_batch_j_gets_what_rank_j_of_a_larger_job_gets(monkeypatch):
    """1 process x 2 micro-batches of 2 images: step by step, micro-batch j holds the images, with the same
    augmentation (flip, size), that rank j of 2 processes with 2 images each gets."""
    from detgn.data import build_detection_train_loader
    from detgn.utils import comm

    def batches(loader, n):
        it = iter(loader)
        return [next(it) for _ in range(n)]

    def key(d):
        return (d["image_id"], tuple(d["image"].shape), d["image"].sum().item(), d["instances"].gt_boxes.tensor.sum())

    mine = batches(build_detection_train_loader(_train_cfg(IMS_PER_DEVICE=2), seed=7, start_iter=1), 3)
    ranks = []
    for r in range(2):
        monkeypatch.setattr(comm, "get_world_size", lambda: 2)
        monkeypatch.setattr(comm, "get_rank", lambda r=r: r)
        ranks.append(batches(build_detection_train_loader(_train_cfg(), seed=7, start_iter=1), 3))
    monkeypatch.undo()
    for step, batch in enumerate(mine):
        parts = split_micro_batches(batch, 2)
        for j in range(2):
            assert [key(d) for d in parts[j]] == [key(d) for d in ranks[j][step]], (step, j)
    assert len({d["image_id"] for b in mine for d in b}) > 4


def test_each_micro_batch_draws_from_its_rank_stream():
    streams = VirtualRankStreams(2, first_rank=4)  # process 2 of a job with 2 micro-batches per process
    outside = torch.random.get_rng_state()
    streams.seed(10)
    assert torch.equal(torch.random.get_rng_state(), outside)  # the process's own stream is untouched
    drawn = []
    for _ in range(2):
        for j in range(2):
            with streams.of(j):
                drawn.append((j, torch.randperm(50)[:5].tolist(), torch.rand(2).tolist()))
    for j, v in enumerate((4, 5)):
        seed_all_rng(10 + v)
        alone = [(j, torch.randperm(50)[:5].tolist(), torch.rand(2).tolist()) for _ in range(2)]
        assert [d for d in drawn if d[0] == j] == alone
    # a checkpoint's states continue the streams
    saved = streams.states()
    again = VirtualRankStreams(2, first_rank=4)
    again.seed(99)
    again.load(saved)
    with streams.of(1), torch.random.fork_rng():
        expected = torch.rand(3)
    with again.of(1):
        assert torch.equal(torch.rand(3), expected)


class _Toy(nn.Module):
    """loss = mean over the batch's rows of (w . x)^2; a batch is a list of (3,) tensors."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 1)
        with torch.no_grad():
            self.lin.weight.copy_(torch.tensor([[0.3, -0.2, 0.5]]))
            self.lin.bias.fill_(0.1)
        self.forwards = 0

    def forward(self, batch):
        self.forwards += 1
        x = torch.stack(batch)
        return {"loss_a": self.lin(x).pow(2).mean(), "loss_b": self.lin(x).abs().mean() * 0.5}


def _rows(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(3, generator=g) for _ in range(n)]


def _loader(rows, per_step):
    while True:
        for i in range(0, len(rows), per_step):
            yield rows[i : i + per_step]


def test_micro_batches_average_their_gradients_exactly():
    """k = 4 micro-batches of 2 rows: the step's gradient is the mean of the 4 micro-batch gradients (what DDP over 4
    ranks computes), bit for bit, and the logged losses are the micro-batches' mean."""
    rows = _rows(8)
    model = _Toy()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = SimpleTrainer(model, _loader(rows, 8), opt, micro_batches=4)
    trainer.train(0, 1)
    assert model.forwards == 4
    ref = _Toy()
    grads, losses = [], []
    for j in range(4):
        ref.zero_grad()
        loss = ref([rows[2 * j], rows[2 * j + 1]])
        sum(loss.values()).backward()
        grads.append([p.grad.clone() for p in ref.parameters()])
        losses.append(torch.stack([v.detach() for v in loss.values()]))
    with torch.no_grad():
        for i, p in enumerate(ref.parameters()):
            g = grads[0][i] / 4 + grads[1][i] / 4 + grads[2][i] / 4 + grads[3][i] / 4
            p -= 0.1 * g
    for p, q in zip(model.parameters(), ref.parameters()):
        assert torch.equal(p, q)
    logged = trainer.storage.latest()
    mean = torch.stack(losses).sum(0) / 4
    assert logged["loss_a"][0] == mean[0].item() and logged["loss_b"][0] == mean[1].item()


def test_clipping_sees_the_accumulated_gradient_once_per_step(monkeypatch):
    from detgn.solver import optimizer as solver_build

    seen = []
    clip = solver_build.clip_gradients

    def recording(params, *args):
        seen.append(torch.cat([p.grad.flatten() for p in params]).clone())
        return clip(params, *args)

    monkeypatch.setattr(solver_build, "clip_gradients", recording)
    cfg = get_cfg()
    cfg.SOLVER.BASE_LR, cfg.SOLVER.MOMENTUM, cfg.SOLVER.WEIGHT_DECAY = 0.5, 0.0, 0.0
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "full_model"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1e-3
    rows = _rows(4, seed=1)
    model = _Toy()
    before = torch.cat([p.detach().flatten() for p in model.parameters()])
    trainer = SimpleTrainer(model, _loader(rows, 4), solver_build.build_optimizer(cfg, model), micro_batches=2)
    trainer.train(0, 1)
    assert len(seen) == 1  # once per step, not per micro-batch
    ref = _Toy()
    total = 0
    for j in range(2):
        ref.zero_grad()
        sum(ref(rows[2 * j : 2 * j + 2]).values()).backward()
        total = total + torch.cat([p.grad.flatten() for p in ref.parameters()]) / 2
    assert torch.equal(seen[0], total) and total.norm() > 1e-2
    step = torch.cat([p.detach().flatten() for p in model.parameters()]) - before
    # lr x the clipped norm of the whole step (to float32 rounding of the weights; clipping per micro-batch would
    # give up to twice as much)
    assert step.norm().item() == pytest.approx(0.5 * 1e-3, rel=1e-3)


def test_fp16_loss_scaling_unscales_once_per_step():
    """GradScaler with 2 micro-batches: scaled backward per micro-batch, one unscale and one update per step, and the
    weights of the unscaled run (a power-of-two scale is exact)."""
    rows = _rows(8, seed=2)
    plain = _Toy()
    SimpleTrainer(plain, _loader(rows, 4), torch.optim.SGD(plain.parameters(), lr=0.1), micro_batches=2).train(0, 2)
    scaled = _Toy()
    trainer = AMPTrainer(
        scaled,
        _loader(rows, 4),
        torch.optim.SGD(scaled.parameters(), lr=0.1),
        dtype="bfloat16",
        device_type="cpu",
        micro_batches=2,
    )
    trainer.runner._forward = lambda data: trainer.model(data)  # fp32 forward: the scaler alone differs from `plain`
    trainer.runner.grad_scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=1)
    calls = {"unscale_": 0, "update": 0}
    for name in calls:
        method = getattr(trainer.runner.grad_scaler, name)

        def counted(*a, _m=method, _n=name, **kw):
            calls[_n] += 1
            return _m(*a, **kw)

        setattr(trainer.runner.grad_scaler, name, counted)
    trainer.train(0, 2)
    assert calls == {"unscale_": 2, "update": 2} and scaled.forwards == 4
    assert (
        trainer.runner.grad_scaler.get_scale() == 2.0**12
    )  # grew after each of the 2 steps, not after each micro-batch
    for p, q in zip(plain.parameters(), scaled.parameters()):
        assert torch.equal(p, q)


def test_a_non_finite_loss_in_one_micro_batch_never_reaches_a_checkpoint(tmp_path):
    from detgn.checkpoint import DetectionCheckpointer

    rows = _rows(4, seed=3)

    def loader():
        step = 0
        while True:
            batch = list(rows)
            if step == 3:
                batch[3] = torch.tensor([float("nan"), 0.0, 0.0])  # micro-batch 1 of step 3
            step += 1
            yield batch

    model = _Toy()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    trainer = SimpleTrainer(model, loader(), opt, flush_period=100, micro_batches=2)
    trainer.register_hooks(
        [PeriodicCheckpointer(DetectionCheckpointer(model, str(tmp_path), optimizer=opt), period=2, max_iter=50)]
    )
    with pytest.raises(FloatingPointError, match=r"Loss became infinite or NaN at iteration 3: non-finite"):
        trainer.train(0, 50)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert not (tmp_path / "model_0000003.pth").exists()
    saved = torch.load(tmp_path / "model_0000001.pth", weights_only=True)["model"]
    assert all(torch.isfinite(v).all() for v in saved.values())


def test_ctrl_c_in_a_micro_batch_stops_after_the_whole_step():
    rows = _rows(4, seed=4)
    model = _Toy()

    class Interrupting(HookBase):
        def before_step(self):
            if self.trainer.iter == 1:
                model.register_forward_pre_hook(
                    lambda *a: os.kill(os.getpid(), signal.SIGINT) if model.forwards == 2 else None
                )

    trainer = SimpleTrainer(model, _loader(rows, 4), torch.optim.SGD(model.parameters(), lr=0.1), micro_batches=2)
    trainer.register_hooks([Interrupting()])
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            trainer.train(0, 10)
    finally:
        signal.signal(signal.SIGINT, inherited)
    # SIGINT arrived in micro-batch 0 of iteration 1; both its micro-batches and its optimizer step ran
    assert trainer.iter == 1 and model.forwards == 4 and trainer.interrupted
    two_steps = _Toy()
    SimpleTrainer(two_steps, _loader(rows, 4), torch.optim.SGD(two_steps.parameters(), lr=0.1), micro_batches=2).train(
        0, 2
    )
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), two_steps.parameters()))


def _count_all_reduces(out_path):
    """In each of 2 processes: a DDP toy model trained 3 steps with 1 and with 2 micro-batches; rank 0 writes the
    number of gradient all-reduces (DDP comm hook calls) of each run."""
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
    from torch.nn.parallel import DistributedDataParallel

    from detgn.utils import comm

    counts = {}
    for k in (1, 2):
        calls = []

        def counting(state, bucket, _calls=calls):
            _calls.append(1)
            return allreduce_hook(state, bucket)

        model = DistributedDataParallel(_Toy())
        model.register_comm_hook(None, counting)
        trainer = SimpleTrainer(
            model,
            _loader(_rows(4, seed=comm.get_rank()), 2 * k),
            torch.optim.SGD(model.parameters(), lr=0.1),
            micro_batches=k,
            streams=VirtualRankStreams(k, comm.get_rank() * k),
        )
        trainer.train(0, 3)
        counts[str(k)] = [len(calls), model.module.forwards]
        del trainer, model  # the DDP reducer and its comm hook go before the process group (launch destroys it)
    if comm.is_main_process():
        with open(out_path, "w") as f:
            json.dump(counts, f)


@pytest.mark.slow  # 2 processes
def test_one_gradient_all_reduce_per_optimizer_step(tmp_path):
    from detgn.jobs.launch import launch

    out = tmp_path / "counts"
    launch(_count_all_reduces, 2, args=(str(out),), use_cuda=False)
    # 3 steps: 3 all-reduces (one bucket) with 1 or 2 micro-batches; 3 or 6 forwards
    assert json.loads(out.read_text()) == {"1": [3, 3], "2": [3, 6]}


def test_the_trainer_warns_once_about_bn_with_micro_batches(tmp_path, caplog):
    import logging

    from detgn.engine import DefaultTrainer

    from tests.util import NARROW_MODEL

    cfg = _train_cfg(IMS_PER_BATCH=2, IMS_PER_DEVICE=1)
    cfg.merge_from_list(NARROW_MODEL + ["MODEL.RESNETS.NORM", "BN", "OUTPUT_DIR", str(tmp_path)])
    with caplog.at_level(logging.INFO, logger="detgn.trainer"):
        trainer = DefaultTrainer(cfg)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert trainer.micro_batches == 2 and len(warnings) == 1
    assert warnings[0].startswith("BatchNorm2d with 2 micro-batches per step: these norms take their statistics")
    assert any(
        "iterations x 2 images (2 micro-batches x 1 image per process)" in r.getMessage() for r in caplog.records
    )
