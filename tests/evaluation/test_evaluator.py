"""evaluation/evaluator.py: the progress lines give seconds per image and an honest ETA from the first image on."""

import logging

import pytest
import torch

from tests.util import TINY_MODEL

TINY = TINY_MODEL


class _FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_evaluation_eta_is_per_image_from_the_first_image(monkeypatch, caplog):
    """25 s per image (40 s for the first, warm-up): every progress line says ~25 s/img and the matching
    ETA, never the elapsed total (the old figure grew 25 -> 50 -> 76 ...)."""
    from detgn.evaluation import evaluator as ev

    clock = _FakeClock()
    monkeypatch.setattr(ev, "_now", clock)

    class SlowModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.calls = 0

        def forward(self, inputs):
            clock.t += 40.0 if self.calls == 0 else 25.0
            self.calls += 1
            return [{} for _ in inputs]

    loader = [[{"image_id": i}] for i in range(8)]
    with caplog.at_level(logging.INFO, logger="detgn.evaluation.evaluator"):
        ev.inference_on_dataset(SlowModel(), loader, None, log_period_s=5.0)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Inference done")]
    assert len(lines) == 8  # every image takes longer than the log period
    per = [float(l.split(". ")[1].split(" s/img")[0]) for l in lines]
    assert per[0] == pytest.approx(40.0) and all(p == pytest.approx(25.0) for p in per[1:])
    etas = [l.split("ETA=")[1] for l in lines]
    assert etas[1] == "0:02:30" and etas[-1] == "0:00:00"  # 6 images left x 25 s


def test_seconds_per_image_window():
    from detgn.evaluation.evaluator import seconds_per_image

    assert seconds_per_image(0.0, []) == 0.0
    assert seconds_per_image(0.0, [30.0]) == 30.0
    assert seconds_per_image(0.0, [30.0, 32.0, 34.0]) == pytest.approx(2.0)
    finished = [100.0 + i for i in range(10)] + [110.0 + 10 * i for i in range(1, 61)]  # slows from 1 to 10 s/img
    assert seconds_per_image(0.0, finished, window=50) == pytest.approx(10.0)
