"""rle_strings_ok (all strings at once, numpy) says what rle_problem (one string, Python) says, on pycocotools'
own encodings and on strings broken every way: cut inside a run length, stray characters, wrong pixel counts,
random characters, empty strings, negative runs."""

import random

import numpy as np
import pycocotools.mask as mask_util

from detgn.structures.rle import rle_problem, rle_strings_ok


def _cases(n=1500, seed=0):
    rng = random.Random(seed)
    digits = "".join(chr(48 + c) for c in range(64))
    strings, pixels = [], []
    for i in range(n):
        h, w = rng.randint(1, 40), rng.randint(1, 40)
        m = (np.random.RandomState(i).rand(h, w) > rng.random()).astype(np.uint8)
        s = mask_util.encode(np.asfortranarray(m))["counts"].decode()
        kind = rng.random()
        if kind < 0.1:
            s = s[:-1]
        elif kind < 0.2:
            s += rng.choice(["0", "a", "~", "!", "z", "Z", "\x7f"])
        elif kind < 0.25:
            h += 1
        elif kind < 0.35:
            s = "".join(rng.choice(digits) for _ in range(rng.randint(0, 14)))
        elif kind < 0.37:
            s = ""
        strings.append(s.encode() if rng.random() < 0.3 else s)
        pixels.append(h * w)
    return strings, pixels


def test_batch_check_equals_one_by_one():
    for seed in (0, 1):
        strings, pixels = _cases(seed=seed)
        want = np.array([rle_problem({"size": [p, 1], "counts": s}, p, 1) is None for s, p in zip(strings, pixels)])
        assert 0.3 < (~want).mean() < 0.7  # both kinds well represented
        assert (rle_strings_ok(strings, pixels) == want).all()
        assert (rle_strings_ok(strings, pixels, chunk=97) == want).all()  # in chunks, as large inputs are
    assert rle_strings_ok([], []).shape == (0,)


def test_first_bad_result_is_named_whichever_check_finds_it():
    import pytest
    from pycocotools.coco import COCO

    from detgn.evaluation.coco_inputs import CocoInputError, check_results

    gt = COCO()
    gt.dataset = {"images": [{"id": 1, "height": 2, "width": 2}], "annotations": [], "categories": [{"id": 1}]}
    gt.createIndex()
    good = {"image_id": 1, "category_id": 1, "score": 0.5, "segmentation": {"size": [2, 2], "counts": "04"}}
    bad_rle = dict(good, segmentation={"size": [2, 2], "counts": "05"})
    bad_score = dict(good, score=float("nan"))
    with pytest.raises(CocoInputError, match="result 1 .*covers|result 1 .*cover"):
        check_results([good, bad_rle, good, bad_score], gt, "segm")
    with pytest.raises(CocoInputError, match="result 1: score nan"):
        check_results([good, bad_score, bad_rle], gt, "segm")
    check_results([good, good], gt, "segm")
