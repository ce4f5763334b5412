"""utils/visualizer.py and utils/prediction_pictures.py: dense labels never overlap; input | GT | prediction panels with a legend."""

import numpy as np
import torch

from tests.util import TINY_MODEL

TINY = TINY_MODEL


def _dense_instances(n=150, hw=(256, 256), seed=0):
    from detgn.structures import Boxes, Instances

    rng = np.random.RandomState(seed)
    xy = rng.uniform(0, 240, (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(8, 16, (n, 2))], axis=1).clip(0, 255)
    inst = Instances(hw)
    inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    inst.scores = torch.tensor(rng.uniform(0.3, 1.0, n), dtype=torch.float32)
    inst.pred_classes = torch.zeros(n, dtype=torch.int64)
    masks = torch.zeros(n, *hw, dtype=torch.bool)
    for i, (x0, y0, x1, y1) in enumerate(boxes.astype(int)):
        masks[i, y0:y1, x0:x1] = True
    inst.pred_masks = masks
    return inst


def test_dense_labels_do_not_overlap_and_are_counted():
    from detgn.utils.visualizer import draw_instances

    inst = _dense_instances()
    img = np.full((256, 256, 3), 90, np.uint8)
    r = draw_instances(
        img,
        inst.pred_boxes.tensor.numpy(),
        inst.pred_masks.numpy(),
        inst.pred_classes.tolist(),
        inst.scores.tolist(),
        ["nucleus"],
        score_low=0.3,
        return_result=True,
    )
    rects = r.label_rects
    assert r.num_instances == 150 and 10 < len(rects) < 150  # many labelled, the crowded rest left out
    for i, a in enumerate(rects):
        assert 0 <= a[0] and 0 <= a[1] and a[2] <= 256 and a[3] <= 256
        for b in rects[i + 1 :]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)
    # the highest-scoring instance always gets its label
    best = int(torch.argmax(inst.scores))
    x0, y0 = inst.pred_boxes.tensor[best, :2].tolist()
    assert any(abs(rc[0] - max(int(x0), 0)) <= 1 for rc in rects)


def test_prediction_picture_has_input_gt_prediction_and_a_legend(tmp_path):
    from detgn.data.detection_utils import record_ground_truth
    from detgn.structures import BoxMode
    from detgn.utils.prediction_pictures import draw_prediction, prediction_panels

    inst = _dense_instances(n=40)
    img = np.full((256, 256, 3), 90, np.uint8)
    record = {
        "annotations": [
            {
                "bbox": [10, 10, 20, 20],
                "bbox_mode": BoxMode.XYWH_ABS,
                "category_id": 0,
                "segmentation": [[10, 10, 30, 10, 30, 30, 10, 30]],
                "iscrowd": 0,
            }
        ]
    }
    pic = prediction_panels(img, inst, record_ground_truth(record, (256, 256)), ["nucleus"], threshold=0.5)
    assert pic.shape == (20 + 256 + 22, 3 * 256, 3)  # title bars, three panels, legend strip
    assert record_ground_truth({}, (256, 256)) is None
    no_gt = prediction_panels(img, inst, None, ["nucleus"], threshold=0.5)
    assert no_gt.shape[1] == 2 * 256
    single = draw_prediction(img, inst, ["nucleus"], threshold=0.9)
    assert single.shape == (256 + 22, 256, 3)
    # the threshold decides what is drawn: nothing above 1.0 leaves the image as it was
    assert np.array_equal(draw_prediction(img, inst, ["nucleus"], threshold=1.01, legend=False), img)
