"""The `lvis` package (lvis-api 0.5.3, the last release; installed for the tests only, with --no-deps) as the
reference that hotcoco's LVIS mode is checked against. It still uses `np.float`, removed in NumPy 1.24: its
module is given a numpy whose `float` is the builtin it always aliased (numpy itself is not changed)."""

import copy
import logging

import numpy as np
import pytest


class _NumpyWithOldAliases:
    float = float

    def __getattr__(self, name):
        return getattr(np, name)


def reference_lvis():
    """(LVIS, LVISEval, LVISResults) of the lvis package; skips the test when it is not installed."""
    pytest.importorskip("lvis")
    import lvis.eval
    from lvis import LVIS, LVISEval, LVISResults

    if not hasattr(np, "float") and lvis.eval.np is np:
        lvis.eval.np = _NumpyWithOldAliases()
    return LVIS, LVISEval, LVISResults


def reference_results(data: dict, results: list, iou_type: str, max_dets: int = 300) -> dict:
    """lvis-api's get_results() for ground-truth `data` (a dict) and `results` (LVIS category ids)."""
    LVIS, LVISEval, LVISResults = reference_lvis()
    gt = LVIS.__new__(LVIS)
    gt.dataset = copy.deepcopy(data)
    gt.logger = logging.getLogger("lvis.lvis")
    gt._create_index()
    ev = LVISEval(gt, LVISResults(gt, copy.deepcopy(results), max_dets=max_dets), iou_type=iou_type)
    ev.run()
    return ev.get_results()
