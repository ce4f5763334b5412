"""MODEL.ACTIVATION_CHECKPOINT.PARTS: the same gradients, bit for bit on CPU, with fewer activations kept; refusals."""

import pytest
import torch

from detgn.config.rules import check_config
from detgn.modeling import build_model
from detgn.utils.errors import ConfigValueError

from .util import gn_cfg, make_inputs

ALL_PARTS = ["stem", "res2", "res3", "res4", "res5", "fpn", "box_head", "mask_head"]


def _step(cfg, state, inputs):
    """Losses, every parameter's gradient, and the bytes of the tensors autograd kept for the backward pass."""
    torch.manual_seed(3)  # the same anchor / ROI sampling in every run
    model = build_model(cfg)
    model.load_state_dict(state)
    model.train()
    kept = []

    def pack(t):
        kept.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        losses = model(inputs)
        n_forward = len(kept)
    sum(losses.values()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in losses.items()}, grads, sum(kept[:n_forward])


@pytest.mark.parametrize("deformable", [False, True])
def test_checkpointing_gives_the_same_gradients_bit_for_bit(deformable):
    """GN R50-FPN Mask R-CNN trained from scratch (FREEZE_AT 0: every part trains), 2 images; with deformable res3-5."""
    cfg = gn_cfg()
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = 200
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 64
    if deformable:
        cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE = [False, True, True, True]
        cfg.MODEL.RESNETS.DEFORM_MODULATED = True
    torch.manual_seed(0)
    state = build_model(cfg).state_dict()
    if deformable:  # offsets start at zero; make them matter
        g = torch.Generator().manual_seed(1)
        for k in state:
            if "conv2_offset" in k:
                state[k] = torch.randn(state[k].shape, generator=g) * 0.05
    inputs = [make_inputs(seed=0), make_inputs(height=160, width=128, seed=1)]
    plain_losses, plain, plain_kept = _step(cfg, state, inputs)
    cfg.MODEL.ACTIVATION_CHECKPOINT.PARTS = ALL_PARTS
    check_config(cfg)
    ckpt_losses, ckpt, ckpt_kept = _step(cfg, state, inputs)
    assert plain_losses.keys() == ckpt_losses.keys()
    assert all(torch.equal(plain_losses[k], ckpt_losses[k]) for k in plain_losses)
    assert plain.keys() == ckpt.keys() and len(plain) > 150
    different = [n for n in plain if not torch.equal(plain[n], ckpt[n])]
    assert not different, different[:5]
    # the forward kept a fraction of the activations (the blocks' and towers' inputs)
    assert ckpt_kept < 0.35 * plain_kept, (ckpt_kept, plain_kept)


def test_inference_and_frozen_parts_build_no_checkpoint():
    cfg = gn_cfg()
    cfg.MODEL.ACTIVATION_CHECKPOINT.PARTS = ["res3", "res4", "res5", "fpn", "box_head", "mask_head"]
    check_config(cfg)
    model = build_model(cfg).eval()
    with torch.no_grad():
        out = model([make_inputs(with_gt=False)])
    assert len(out) == 1 and "instances" in out[0]


@pytest.mark.parametrize(
    "opts, why",
    [
        (["MODEL.ACTIVATION_CHECKPOINT.PARTS", "['res2']"], "'res2' is frozen by MODEL.BACKBONE.FREEZE_AT 2"),
        (["MODEL.ACTIVATION_CHECKPOINT.PARTS", "['stem']"], "'stem' is frozen by MODEL.BACKBONE.FREEZE_AT 2"),
        (["MODEL.ACTIVATION_CHECKPOINT.PARTS", "['mask_head']", "MODEL.MASK_ON", "False"], "MODEL.MASK_ON is False"),
        (
            ["MODEL.ACTIVATION_CHECKPOINT.PARTS", "['res4']", "MODEL.COMPILE.PARTS", "['backbone']"],
            "'res4' is inside MODEL.COMPILE.PARTS 'backbone'",
        ),
        (["MODEL.ACTIVATION_CHECKPOINT.PARTS", "['res6']"], "must be a list of 0 to 8 value"),
    ],
)
def test_parts_that_would_do_nothing_are_refused(opts, why):
    cfg = gn_cfg()
    cfg.merge_from_list(opts)
    with pytest.raises(ConfigValueError, match=r"^MODEL.ACTIVATION_CHECKPOINT.PARTS = .*") as e:
        check_config(cfg)
    assert why in str(e.value)
