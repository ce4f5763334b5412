"""utils/events.py: metrics.json holds strict JSON (null for NaN/Inf), read back by the plots."""

import json


from tests.util import TINY_MODEL

TINY = TINY_MODEL


def _strict_json(line):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(line, parse_constant=refuse)


def test_metrics_json_writes_null_for_nan_and_parses_strictly(tmp_path):
    from detgn.utils.events import EventStorage, JSONWriter
    from detgn.utils.plot_metrics import read_metrics

    path = str(tmp_path / "metrics.json")
    w = JSONWriter(path)
    with EventStorage(0) as storage:
        storage.put_scalars(loss_cls=0.5, smoothing_hint=False)
        storage.put_scalar("segm/APl", float("nan"), smoothing_hint=False)
        storage.put_scalar("segm/AP", 12.5, smoothing_hint=False)
        storage.put_scalar("bad", float("inf"), smoothing_hint=False)
        w.write()
    w.close()
    rows = [_strict_json(line) for line in open(path)]
    assert rows == [{"iteration": 0, "bad": None, "loss_cls": 0.5, "segm/AP": 12.5, "segm/APl": None}]
    series = read_metrics(path)  # null values are not plotted
    assert "segm/APl" not in series and series["segm/AP"] == [(0, 12.5)]
