"""tools/evaluate_json.py and coco_evaluation's metric values: an undefined metric is nan, never -100."""

import json
import math


from tests.util import TINY_MODEL, run_tool_here

TINY = TINY_MODEL


def _tiny_coco(tmp_path):
    """Ground truth with only small objects (APl undefined) and the same boxes as predictions."""
    images = [{"id": i, "file_name": f"{i}.png", "height": 64, "width": 64} for i in (1, 2)]
    anns, results = [], []
    for k, (img, x) in enumerate([(1, 4), (1, 30), (2, 10)]):
        box = [x, 5.0, 12.0, 10.0]
        anns.append({"id": k + 1, "image_id": img, "category_id": 1, "bbox": box, "area": 120.0, "iscrowd": 0})
        results.append({"image_id": img, "category_id": 1, "bbox": box, "score": 0.9})
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "thing"}]}))
    res = tmp_path / "res.json"
    res.write_text(json.dumps(results))
    return gt, res


def test_undefined_metric_is_nan_in_log_and_in_evaluate_json(tmp_path, capsys):
    from detgn.evaluation.coco_evaluation import coco_stat_to_percent, format_metric

    assert math.isnan(coco_stat_to_percent(-1.0)) and coco_stat_to_percent(0.25) == 25.0
    assert (
        format_metric(float("nan")) == "nan"
        and format_metric(0.0) == "0.000"
        and format_metric(12.34567, 4) == "12.3457"
    )
    gt, res = _tiny_coco(tmp_path)
    status, out, err = run_tool_here("evaluate_json", ["--gt", str(gt), "--results", str(res)], capsys)
    assert status == 0, err
    fields = dict(zip(out.split()[1::2], out.split()[2::2]))
    assert fields["AP"] == "100.000" and fields["APs"] == "100.000"
    assert fields["APm"] == "nan" and fields["APl"] == "nan" and "-100" not in out
