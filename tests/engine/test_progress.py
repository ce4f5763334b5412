"""Progress output: a console line after the first iteration and after long silences; metrics.json unchanged."""

import json
import logging

from detgn.engine.hooks import IterationTimer, PeriodicWriter
from detgn.engine.train_loop import TrainerBase
from detgn.utils.events import CommonMetricPrinter, JSONWriter, get_event_storage


class _Trainer(TrainerBase):
    def run_step(self):
        get_event_storage().put_scalars(total_loss=1.0 / (self.iter + 1), loss_cls=0.5)


def _run(tmp_path, start_iter, max_iter, max_silence_s, caplog):
    trainer = _Trainer()
    json_file = tmp_path / "metrics.json"
    writers = [CommonMetricPrinter(max_iter), JSONWriter(str(json_file), start_iter)]
    trainer.register_hooks([IterationTimer(), PeriodicWriter(writers, period=5, max_silence_s=max_silence_s)])
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="detgn.utils.events"):
        trainer.train(start_iter, max_iter)
    lines = [r.getMessage() for r in caplog.records if r.name == "detgn.utils.events"]
    rows = [json.loads(x)["iteration"] for x in open(json_file)]
    return lines, rows


def test_first_iteration_is_printed_with_eta(tmp_path, caplog):
    lines, rows = _run(tmp_path, 0, 12, max_silence_s=1e9, caplog=caplog)
    iters = [int(x.split("iter: ")[1].split()[0]) for x in lines]
    assert iters == [0, 4, 9, 11]  # first step, every 5th, the last
    assert lines[0].startswith("eta: ") and "time: " in lines[0]
    assert rows == list(range(12))  # one row per iteration, nothing extra from the early line


def test_silence_forces_console_lines_only(tmp_path, caplog):
    lines, rows = _run(tmp_path, 0, 7, max_silence_s=0.0, caplog=caplog)
    iters = [int(x.split("iter: ")[1].split()[0]) for x in lines]
    assert iters[:7] == list(range(7))  # every step, because every step is "too long" here
    assert rows == list(range(7))


def test_resumed_run_prints_its_first_iteration(tmp_path, caplog):
    _run(tmp_path, 0, 3, max_silence_s=1e9, caplog=caplog)
    lines, rows = _run(tmp_path, 3, 12, max_silence_s=1e9, caplog=caplog)
    assert "iter: 3 " in lines[0]
    assert rows == list(range(12))


def test_eta_of_a_nan_time_is_left_out():
    from detgn.utils.events import EventStorage

    with EventStorage(0) as s:
        s.put_scalar("time", float("nan"))
        assert CommonMetricPrinter(10)._eta(s) is None
        s.iter = 1
        s.put_scalar("time", 2.0)
        assert CommonMetricPrinter(10)._eta(s) == "0:00:16"  # the NaN was the left-out first step
        s.put_scalar("time", float("inf"))
        assert CommonMetricPrinter(10)._eta(s) is None  # never "cannot convert float NaN to integer"
    with EventStorage(0) as s:
        for i, t in enumerate([10.0, 2.0, 4.0]):  # the first (warm-up) step is left out of the mean
            s.iter = i
            s.put_scalar("time", t)
        assert CommonMetricPrinter(10)._eta(s) == "0:00:21"  # 3.0 s x 7 remaining
