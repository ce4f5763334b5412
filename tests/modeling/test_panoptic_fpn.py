"""PanopticFPN: the combination rules on constructed cases, one training step with semantic labels (losses,
loss weights), inference outputs, and one-line refusals. Parity with detectron2: test_detectron2_parity.py."""

import pytest
import torch

from detgn.config import get_cfg
from detgn.modeling import build_model
from detgn.modeling.meta_arch.panoptic_fpn import MissingSemSegError, combine_semantic_and_instance_outputs
from detgn.structures import Boxes, Instances
from tests.util import QUICK, TINY_MODEL


def _instances(masks, scores, classes):
    inst = Instances((6, 8))
    inst.pred_masks = torch.stack(masks)
    inst.scores = torch.tensor(scores)
    inst.pred_classes = torch.tensor(classes)
    inst.pred_boxes = Boxes(torch.zeros(len(scores), 4))
    return inst


def _box(y0, y1, x0, x1):
    m = torch.zeros(6, 8, dtype=torch.bool)
    m[y0:y1, x0:x1] = True
    return m


def test_combine_rules_on_constructed_cases():
    a = _box(0, 3, 0, 4)  # 12 px
    b = _box(1, 4, 2, 6)  # 12 px, overlaps a by 2x2 = 4 px (1/3 of b): kept minus the overlap
    c = _box(0, 3, 0, 3)  # 9 px inside a: overlap 9/9 > 0.5, dropped
    d = torch.zeros(6, 8, dtype=torch.bool)  # empty mask: skipped
    e = _box(5, 6, 0, 2)  # below the score threshold: never placed (and nothing after it by score)
    inst = _instances([b, a, c, d, e], [0.8, 0.9, 0.7, 0.75, 0.3], [1, 0, 2, 1, 0])
    semantic = torch.zeros(6, 8, dtype=torch.long)
    semantic[:, 6:] = 2  # stuff 2: columns 6-7 of rows 0-4 (10 px)
    semantic[5, :] = 1  # stuff 1: row 5 (8 px; e there was not placed)
    pan, segments = combine_semantic_and_instance_outputs(inst, semantic, 0.5, 6, 0.5)
    assert [(s["id"], s["isthing"], s["category_id"]) for s in segments] == [
        (1, True, 0),
        (2, True, 1),
        (3, False, 1),
        (4, False, 2),
    ]
    assert (
        segments[0]["instance_id"] == 1
        and segments[1]["instance_id"] == 0
        and segments[0]["score"] == pytest.approx(0.9)
    )
    assert torch.equal(pan == 1, a) and torch.equal(pan == 2, b & ~a) and (pan == 2).sum() == 8
    assert segments[2]["area"] == 8 and (pan == 3).sum() == 8 and segments[3]["area"] == 10
    assert pan.dtype == torch.int32 and (pan == 0).sum() == 48 - 12 - 8 - 8 - 10
    # a stuff region below the area limit is left unlabelled; label 0 ("any thing") is never stuff
    pan, segments = combine_semantic_and_instance_outputs(inst, semantic, 0.5, 9, 0.5)
    assert [s["category_id"] for s in segments if not s["isthing"]] == [2]


def _panoptic_cfg(extra=()):
    cfg = get_cfg()
    cfg.merge_from_file(QUICK)
    cfg.merge_from_list(
        TINY_MODEL
        + [
            "MODEL.META_ARCHITECTURE",
            "PanopticFPN",
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES",
            "3",
            "MODEL.SEM_SEG_HEAD.CONVS_DIM",
            "32",
            "MODEL.ROI_HEADS.NUM_CLASSES",
            "2",
            "MODEL.PANOPTIC_FPN.COMBINE.STUFF_AREA_LIMIT",
            "16",
        ]
        + list(extra)
    )
    return cfg


def _inputs(n=2, size=(64, 96)):
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        inst = Instances(size)
        inst.gt_boxes = Boxes(torch.tensor([[4.0, 4.0, 40.0, 30.0], [50.0, 20.0, 90.0, 60.0]]))
        inst.gt_classes = torch.tensor([0, 1])
        from detgn.structures import BitMasks

        m = torch.zeros(2, *size, dtype=torch.bool)
        m[0, 4:30, 4:40], m[1, 20:60, 50:90] = True, True
        inst.gt_masks = BitMasks(m)
        sem = torch.randint(1, 3, size, generator=g)
        sem[m.any(0)] = 0
        sem[:2] = 255  # unlabelled rows: no loss
        out.append(
            {
                "image": torch.randint(0, 256, (3, *size), generator=g, dtype=torch.uint8),
                "instances": inst,
                "sem_seg": sem,
                "height": size[0],
                "width": size[1],
            }
        )
    return out


def test_one_training_step_and_loss_weights():
    torch.manual_seed(0)
    model = build_model(_panoptic_cfg())
    model.train()
    batch = _inputs()
    losses = model(batch)
    assert set(losses) == {"loss_sem_seg", "loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg", "loss_mask"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.sem_seg_head.predictor.weight.grad.abs().sum() > 0
    assert "sem_seg_head.p5.4.norm.weight" in model.state_dict()  # detectron2's keys: p5 has 3 conv+upsample pairs
    torch.manual_seed(0)
    weighted = build_model(
        _panoptic_cfg(["MODEL.PANOPTIC_FPN.INSTANCE_LOSS_WEIGHT", "0.5", "MODEL.SEM_SEG_HEAD.LOSS_WEIGHT", "2.0"])
    )
    weighted.load_state_dict(model.state_dict())
    weighted.train()
    torch.manual_seed(1)
    a = model(batch)
    torch.manual_seed(1)
    b = weighted(batch)
    for k in ("loss_cls", "loss_box_reg", "loss_mask"):  # the ROI heads' losses are scaled
        assert torch.allclose(b[k], 0.5 * a[k], rtol=1e-5), k
    assert torch.allclose(b["loss_rpn_cls"], a["loss_rpn_cls"])  # the RPN's are not (as detectron2)
    assert torch.allclose(b["loss_sem_seg"], 2.0 * a["loss_sem_seg"], rtol=1e-5)


def test_inference_outputs_and_combine_switch():
    torch.manual_seed(0)
    model = build_model(
        _panoptic_cfg(
            [
                "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
                "0.0",
                "MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH",
                "0.0",
            ]
        )
    ).eval()
    x = [{"image": _inputs(1)[0]["image"], "height": 32, "width": 48}]
    with torch.no_grad():
        out = model(x)[0]
    assert out["sem_seg"].shape == (3, 32, 48) and out["instances"].image_size == (32, 48)
    pan, segments = out["panoptic_seg"]
    assert pan.shape == (32, 48) and sorted(set(pan.unique().tolist()) - {0}) == [s["id"] for s in segments]
    model.combine_on = False
    with torch.no_grad():
        assert "panoptic_seg" not in model(x)[0]
    cfg = _panoptic_cfg(["MODEL.PANOPTIC_FPN.COMBINE.ENABLED", "False"])
    assert build_model(cfg).combine_on is False


def test_training_without_semantic_labels_is_one_line():
    model = build_model(_panoptic_cfg())
    model.train()
    batch = [{k: v for k, v in d.items() if k != "sem_seg"} for d in _inputs(1)]
    with pytest.raises(MissingSemSegError, match="sem_seg") as e:
        model(batch)
    assert "\n" not in str(e.value)


def test_head_and_level_refusals():
    from detgn.utils.errors import ConfigValueError

    with pytest.raises(ConfigValueError, match="IN_FEATURES"):
        build_model(_panoptic_cfg(["MODEL.SEM_SEG_HEAD.IN_FEATURES", "['p2', 'res9']"]))
    with pytest.raises(ConfigValueError, match="COMMON_STRIDE 8: feature p2 has stride 4"):
        build_model(_panoptic_cfg(["MODEL.SEM_SEG_HEAD.COMMON_STRIDE", "8"]))


def test_export_refuses_panoptic_fpn_in_one_line():
    from detgn.export import check_exportable
    from detgn.utils.errors import UserInputError

    with pytest.raises(UserInputError, match="MODEL.META_ARCHITECTURE") as e:
        check_exportable(_panoptic_cfg(), "torchscript")
    assert "\n" not in str(e.value)
