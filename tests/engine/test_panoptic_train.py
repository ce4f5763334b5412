"""configs/nuclei_panoptic.yaml end to end: one training iteration of Panoptic FPN on the bundled panoptic nuclei
data, then its evaluation (mIoU, COCO AP and PQ from one pass over the validation images), through train_net."""

import json
import math
import os

from tests.util import NARROW_MODEL, REPO, run_tool_here

CONFIG = os.path.join(REPO, "configs", "nuclei_panoptic.yaml")


def test_one_iteration_then_pq(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DETGN_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "run"
    args = [
        "--config-file", CONFIG, *NARROW_MODEL,
        "MODEL.SEM_SEG_HEAD.CONVS_DIM", "32",
        "SOLVER.MAX_ITER", "1", "SOLVER.IMS_PER_BATCH", "1",
        "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "224",
        "MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH", "0.0",
        "TEST.VIS_PERIOD_IMAGES", "0",
        "OUTPUT_DIR", str(out),
    ]  # fmt: skip
    status, _, err = run_tool_here("train_net", args, capsys)
    assert status == 0, err[-3000:]
    final = [json.loads(line) for line in open(out / "metrics.json")][-1]
    for key in ("sem_seg/mIoU", "sem_seg/pACC", "bbox/AP", "segm/AP", "panoptic_seg/PQ", "panoptic_seg/PQ_th",
                "panoptic_seg/PQ_st", "panoptic_seg/SQ", "panoptic_seg/RQ"):  # fmt: skip
        assert key in final and not math.isnan(final[key]), (key, sorted(final))
    assert 0 <= final["panoptic_seg/PQ"] <= 100 and 0 <= final["sem_seg/mIoU"] <= 100
    evaluation = json.load(open(out / "inference" / "nuclei_panoptic_val" / "panoptic_evaluation.json"))
    assert set(evaluation["per_class"]) == {"nucleus", "tissue", "background"}
    predictions = json.load(open(out / "inference" / "nuclei_panoptic_val" / "panoptic_predictions.json"))
    assert len(predictions["annotations"]) == 12
