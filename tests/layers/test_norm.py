import os
import tempfile

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from detgn.config import get_cfg
from detgn.layers import Conv2d, FrozenBatchNorm2d, NaiveSyncBatchNorm, get_norm, norm_from_cfg
from detgn.modeling.backbone import build_backbone


def _backbone(norm, **overrides):
    cfg = get_cfg()
    cfg.MODEL.RESNETS.NORM = norm
    cfg.MODEL.FPN.NORM = norm if norm != "FrozenBN" else ""
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    for k, v in overrides.items():
        cfg.merge_from_list([k, v])
    return build_backbone(cfg)


def test_gn_backbone_is_batch_independent_in_train_mode():
    torch.manual_seed(0)
    model = _backbone("GN").train()
    a = torch.randn(1, 3, 64, 64)
    others = torch.randn(3, 3, 64, 64) * 5 + 2
    alone = model(a)
    batched = model(torch.cat([a, others]))
    for k in alone:
        torch.testing.assert_close(alone[k][0], batched[k][0], rtol=1e-4, atol=1e-4)


def test_bn_backbone_is_not_batch_independent_in_train_mode():
    torch.manual_seed(0)
    model = _backbone("BN").train()
    a = torch.randn(2, 3, 64, 64)
    others = torch.randn(2, 3, 64, 64) * 5 + 2
    alone = model(a)
    batched = model(torch.cat([a, others]))
    diff = max((alone[k][0] - batched[k][0]).abs().max().item() for k in alone)
    assert diff > 1e-2


def test_frozen_bn_equals_bn_in_eval():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(8)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.uniform_(-1, 1)
    bn.eval()
    frozen = FrozenBatchNorm2d(8)
    frozen.load_state_dict(bn.state_dict())
    x = torch.randn(2, 8, 5, 5)
    torch.testing.assert_close(frozen(x), bn(x), rtol=1e-5, atol=1e-5)


def test_convert_frozen_batchnorm_keeps_outputs():
    torch.manual_seed(0)
    model = _backbone("BN").eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(1, 3, 64, 64)
    before = model(x)
    FrozenBatchNorm2d.convert_frozen_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())
    after = model(x)
    for k in before:
        torch.testing.assert_close(before[k], after[k], rtol=1e-4, atol=1e-4)


def test_get_norm_names_and_errors():
    assert isinstance(get_norm("GN", 64), nn.GroupNorm) and get_norm("GN", 64).num_groups == 32
    assert get_norm("GN", 64).eps == 1e-5
    assert isinstance(get_norm("FrozenBN", 4), FrozenBatchNorm2d)
    assert isinstance(get_norm("SyncBN", 4), nn.SyncBatchNorm)
    assert isinstance(get_norm("NaiveSyncBN", 4), NaiveSyncBatchNorm)
    assert get_norm("", 4) is None and get_norm(None, 4) is None
    assert isinstance(get_norm(lambda c: nn.GroupNorm(4, c), 8), nn.GroupNorm)
    ln = get_norm("LN", 6)
    x = torch.randn(2, 6, 3, 3)
    y = ln(x)
    torch.testing.assert_close(y.mean(1), torch.zeros(2, 3, 3), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="Unknown norm 'GNN'"):
        get_norm("GNN", 4)
    with pytest.raises(ValueError, match="not divisible"):
        get_norm("GN", 48)


def test_group_norm_groups_from_config():
    cfg = get_cfg()
    cfg.MODEL.GROUP_NORM.NUM_GROUPS = 16
    norm = norm_from_cfg("GN", cfg)
    assert get_norm(norm, 64).num_groups == 16


def test_conv_accepts_empty_batch_with_gn():
    conv = Conv2d(8, 32, 3, padding=1, bias=False, norm=get_norm("GN", 32), activation=nn.ReLU())
    out = conv(torch.zeros(0, 8, 7, 7, requires_grad=True))
    assert out.shape == (0, 32, 7, 7)
    out.sum().backward()
    assert conv.weight.grad is not None


def test_weight_standardization():
    torch.manual_seed(0)
    conv = Conv2d(4, 6, 3, padding=1, bias=False, weight_standardization=True)
    w = conv._weight().flatten(1)
    torch.testing.assert_close(w.mean(1), torch.zeros(6), atol=1e-5, rtol=0)
    torch.testing.assert_close(w.var(1, unbiased=False), torch.ones(6), atol=1e-2, rtol=0)
    plain = nn.Conv2d(4, 6, 3, padding=1, bias=False)
    plain.weight.data.copy_(w.view_as(plain.weight))
    x = torch.randn(1, 4, 5, 5)
    torch.testing.assert_close(conv(x), plain(x), rtol=1e-5, atol=1e-5)
    b = _backbone("GN", **{"MODEL.WEIGHT_STANDARDIZATION.BACKBONE": "True"})
    assert b.bottom_up.res2[0].conv1.weight_standardization
    assert not b.fpn_lateral2.weight_standardization


def _naive_sync_worker(rank, init_file, out_file, x_all):
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    torch.manual_seed(0)
    bn = NaiveSyncBatchNorm(4).train()
    x = x_all if rank == 0 else x_all[:0]  # rank 1 has an empty batch
    x = x.clone().requires_grad_(True)
    y = bn(x)
    y.sum().backward()
    if rank == 0:
        torch.save({"y": y.detach(), "mean": bn.running_mean.clone()}, out_file)
    torch.distributed.barrier()  # let in-flight sends finish before the group goes away
    torch.distributed.destroy_process_group()


def test_naive_sync_bn_with_an_empty_worker():
    x = torch.randn(3, 4, 5, 5) * 2 + 1
    with tempfile.TemporaryDirectory() as d:
        init_file, out_file = os.path.join(d, "init"), os.path.join(d, "out.pt")
        mp.spawn(_naive_sync_worker, args=(init_file, out_file, x), nprocs=2)
        res = torch.load(out_file)
    ref = nn.BatchNorm2d(4).train()
    y_ref = ref(x)
    torch.testing.assert_close(res["y"], y_ref.detach(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(res["mean"], ref.running_mean, rtol=1e-4, atol=1e-4)


def test_group_norm_is_float32_under_bf16_autocast():
    torch.manual_seed(0)
    gn = get_norm("GN", 64)
    with torch.no_grad():
        gn.weight.uniform_(0.5, 1.5)
        gn.bias.uniform_(-1, 1)
    x = (torch.randn(2, 64, 9, 9) * 3 + 1).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = gn(x)
    assert y.dtype == torch.bfloat16
    ref = torch.nn.functional.group_norm(x.float(), 32, gn.weight, gn.bias, 1e-5)  # float32 maths on the same input
    # one rounding of the float32 result: at most half a bf16 ulp away
    assert torch.equal(y, ref.bfloat16()) or (y.float() - ref).abs().max() <= ref.abs().max() * 2**-8


def test_per_component_group_norm_groups():
    """NORM 'GN(G)' gives one component its own groups; plain 'GN' keeps MODEL.GROUP_NORM.NUM_GROUPS."""
    from detgn.config import get_cfg
    from detgn.config.rules import check_config
    from detgn.export import check_exportable
    from detgn.modeling import build_model
    from detgn.utils.errors import ConfigValueError

    cfg = get_cfg()
    cfg.merge_from_list(
        [
            "MODEL.DEVICE",
            "cpu",
            "MODEL.RESNETS.DEPTH",
            18,
            "MODEL.RESNETS.RES2_OUT_CHANNELS",
            64,
            "MODEL.RESNETS.NORM",
            "GN",
            "MODEL.FPN.NORM",
            "GN(16)",
            "MODEL.ROI_BOX_HEAD.NAME",
            "FastRCNNConvFCHead",
            "MODEL.ROI_BOX_HEAD.NUM_CONV",
            2,
            "MODEL.ROI_BOX_HEAD.NORM",
            "GN(8)",
            "MODEL.MASK_ON",
            True,
            "MODEL.ROI_MASK_HEAD.NORM",
            "GN",
        ]
    )
    check_config(cfg)
    model = build_model(cfg)
    groups = lambda m: {x.num_groups for x in m.modules() if isinstance(x, torch.nn.GroupNorm)}
    assert groups(model.backbone.bottom_up) == {32} and groups(model.roi_heads.mask_head) == {32}
    assert groups(model.backbone.fpn_lateral2) == {16} and groups(model.roi_heads.box_head) == {8}
    check_exportable(cfg)  # a GroupNorm all the same to the exporter
    cfg.MODEL.ROI_BOX_HEAD.NORM = "GN(12)"  # 256 channels
    with pytest.raises(
        ConfigValueError, match=r"MODEL.ROI_BOX_HEAD.NORM = 'GN\(12\)': must be 'GN\(G\)' with G a divisor of 256"
    ):
        check_config(cfg)


def test_the_config_rules_take_their_norm_names_from_get_norm():
    from detgn.config.rules import NORMS, RULES
    from detgn.layers.norm import NORM_NAMES, get_norm, is_norm_name

    assert NORMS is NORM_NAMES
    for name in NORM_NAMES + ("GN(8)",):  # every name the rules accept builds (or is "no norm")
        assert RULES["MODEL.FPN.NORM"].ok(name)
        layer = get_norm(name, 32)
        assert (layer is None) == (name == "")
    assert not is_norm_name("GN(0)") and not RULES["MODEL.FPN.NORM"].ok("BatchNorm")
