"""Experiment trackers as training writers (utils/events.EventWriter): Weights & Biases and MLflow.

Each is an optional extra (`pip install 'detgn[wandb]'`, `'detgn[mlflow]'`), enabled by its config keys; a config
that enables one whose package is missing is refused when it is read, in one line naming the extra. On the main
process only (DefaultTrainer.build_writers), each logs:

- the config once, at the start (W&B: the run's config; MLflow: one parameter per key, and config.yaml);
- every scalar of the event storage at the iteration it belongs to (losses, lr, time, the evaluation's
  dataset/task/metric values), the rows metrics.json gets;
- at the end, the AP table of the last evaluation (one row per dataset/task, one column per AP metric) and the
  plots of metrics.json (losses.png, lr.png, ap.png; with matplotlib).

W&B: WANDB.MODE "offline" writes the run under WANDB.DIR (OUTPUT_DIR by default) without network, for
`wandb sync` later. MLflow: MLFLOW.TRACKING_URI "" is a file store in OUTPUT_DIR/mlruns (MLflow 3 asks for
MLFLOW_ALLOW_FILE_STORE=true to write one; detgn sets it, unless already set, when it uses that default).
"""

import importlib.util
import json
import logging
import os
from typing import Dict, List

from detgn.config.components import config_function
from detgn.config.config import CfgNode as CN
from detgn.config.rules import one_of
from detgn.utils.events import EventWriter, get_event_storage, rows_since

__all__ = ["add_tracker_config", "WandbWriter", "MLflowWriter", "build_tracker_writers", "ap_table", "flat_config"]

logger = logging.getLogger(__name__)

_EXTRAS = {"WANDB": ("wandb", "wandb"), "MLFLOW": ("mlflow", "mlflow")}  # node -> (module, extra)


def _package_installed(c):
    """A tracker is enabled only where its package can be imported."""
    for node, (module, extra) in _EXTRAS.items():
        if c[node].ENABLED and importlib.util.find_spec(module) is None:
            return (
                f"{node}.ENABLED",
                True,
                f"False here: the {module} package is missing (pip install 'detgn[{extra}]')",
            )
    return None


def _settings_need_enabled(c):
    """A tracker's settings do something only with its ENABLED."""
    defaults = {"WANDB": {"PROJECT": "detgn", "ENTITY": "", "NAME": "", "MODE": "online", "DIR": ""}}
    defaults["MLFLOW"] = {"TRACKING_URI": "", "EXPERIMENT": "detgn", "RUN_NAME": ""}
    for node, keys in defaults.items():
        if not c[node].ENABLED:
            for key, default in keys.items():
                if c[node][key] != default:
                    return (f"{node}.{key}", c[node][key], f"its default {default!r} unless {node}.ENABLED is True")
    return None


@config_function(
    rules={"WANDB.MODE": one_of("online", "offline")},
    relations=[
        ("a tracker's package is installed where it is enabled", _package_installed),
        ("a tracker's settings only with its ENABLED", _settings_need_enabled),
    ],
)
def add_tracker_config(cfg) -> None:
    """WANDB.* and MLFLOW.* (module docstring)."""
    w = cfg.WANDB = CN()
    w.ENABLED = False  # log the run to Weights & Biases (pip install 'detgn[wandb]')
    w.PROJECT = "detgn"  # W&B project
    w.ENTITY = ""  # W&B team or user; "" = the account's default
    w.NAME = ""  # run name; "" = OUTPUT_DIR's last folder name
    w.MODE = "online"  # "online" or "offline" (written under DIR, synced later with `wandb sync`)
    w.DIR = ""  # where W&B writes its files; "" = OUTPUT_DIR
    m = cfg.MLFLOW = CN()
    m.ENABLED = False  # log the run to MLflow (pip install 'detgn[mlflow]')
    m.TRACKING_URI = ""  # MLflow tracking URI; "" = a file store in OUTPUT_DIR/mlruns
    m.EXPERIMENT = "detgn"  # MLflow experiment name
    m.RUN_NAME = ""  # run name; "" = OUTPUT_DIR's last folder name


def flat_config(cfg, prefix: str = "") -> Dict[str, object]:
    """{"SOLVER.BASE_LR": 0.02, ...}: every key of the config with its value (lists and tuples as lists)."""
    out = {}
    for key, value in cfg.items():
        if isinstance(value, dict):
            out.update(flat_config(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return out


def ap_table(latest: Dict[str, float]) -> List[Dict[str, object]]:
    """The AP metrics of the latest evaluation as rows {"dataset", "task", metric: value}, from storage keys
    "dataset/task/AP..." (or "task/AP..." with one test set, whose rows then have dataset "")."""
    rows: Dict[tuple, Dict[str, object]] = {}
    full = {k for k in latest if k.count("/") == 2}
    for key, value in latest.items():
        parts = key.split("/")
        if not parts[-1].startswith("AP") or len(parts) not in (2, 3):
            continue
        if len(parts) == 2 and any(f.endswith(f"/{key}") for f in full):
            continue  # the same number as "dataset/task/metric"
        dataset, task, metric = parts if len(parts) == 3 else ["", *parts]
        rows.setdefault((dataset, task), {"dataset": dataset, "task": task})[metric] = value
    return [rows[k] for k in sorted(rows)]


def _run_name(cfg, name: str) -> str:
    return name or os.path.basename(os.path.normpath(cfg.OUTPUT_DIR)) or "detgn"


def _plots(output_dir: str) -> List[str]:
    try:
        from detgn.utils.plot_metrics import plot_metrics

        return plot_metrics(output_dir)
    except ImportError as e:  # matplotlib is the demo extra's
        logger.info("No plots for the trackers (%s)", e)
        return []


class _TrackerWriter(EventWriter):
    """Scalars row by row, then the AP table and the plots at close(); subclasses send them."""

    def __init__(self, cfg, start_iter: int):
        self.output_dir = cfg.OUTPUT_DIR
        self._last_write = start_iter - 1

    def write(self) -> None:
        rows = rows_since(get_event_storage(), self._last_write)
        for it in sorted(rows):
            self._log_scalars({k: float(v) for k, v in rows[it].items()}, it)
        if rows:
            self._last_write = max(rows)

    def close(self) -> None:
        latest = {k: float(v) for k, (v, _) in get_event_storage().latest().items()}
        table = ap_table(latest)
        self._finish(table, _plots(self.output_dir))


class WandbWriter(_TrackerWriter):
    """Weights & Biases (module docstring)."""

    def __init__(self, cfg, start_iter: int = 0):
        super().__init__(cfg, start_iter)
        import wandb

        self._wandb = wandb
        w = cfg.WANDB
        self.run = wandb.init(
            project=w.PROJECT,
            entity=w.ENTITY or None,
            name=_run_name(cfg, w.NAME),
            mode=w.MODE,
            dir=w.DIR or cfg.OUTPUT_DIR,
            config=flat_config(cfg),
            resume="allow" if start_iter > 0 else None,
        )

    def _log_scalars(self, values: Dict[str, float], iteration: int) -> None:
        self.run.log(values, step=iteration)

    def _finish(self, table, plots) -> None:
        extra = {}
        if table:
            columns = ["dataset", "task"] + sorted({k for r in table for k in r} - {"dataset", "task"})
            extra["ap_table"] = self._wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in table])
        for path in plots:
            extra[f"plots/{os.path.splitext(os.path.basename(path))[0]}"] = self._wandb.Image(path)
        if extra:
            self.run.log(extra, step=max(self._last_write, 0))
        self.run.finish()


class MLflowWriter(_TrackerWriter):
    """MLflow (module docstring)."""

    def __init__(self, cfg, start_iter: int = 0):
        super().__init__(cfg, start_iter)
        m = cfg.MLFLOW
        uri = m.TRACKING_URI
        if not uri:  # the default file store in OUTPUT_DIR; MLflow 3 asks for this opt-in to write one
            uri = "file:" + os.path.abspath(os.path.join(cfg.OUTPUT_DIR, "mlruns"))
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name(m.EXPERIMENT)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(m.EXPERIMENT)
        self.run_id = self.client.create_run(experiment_id, run_name=_run_name(cfg, m.RUN_NAME)).info.run_id
        from mlflow.entities import Param

        params = [Param(k, json.dumps(v) if not isinstance(v, str) else v) for k, v in flat_config(cfg).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 parameters per batch
            self.client.log_batch(self.run_id, params=params[i : i + 100])
        self.client.log_text(self.run_id, cfg.dump(), "config.yaml")

    def _log_scalars(self, values: Dict[str, float], iteration: int) -> None:
        from mlflow.entities import Metric

        import time

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, iteration) for k, v in values.items()]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + 1000])

    def _finish(self, table, plots) -> None:
        if table:
            self.client.log_dict(self.run_id, table, "ap_table.json")
        for path in plots:
            self.client.log_artifact(self.run_id, path, "plots")
        self.client.set_terminated(self.run_id)


def build_tracker_writers(cfg, start_iter: int) -> List[EventWriter]:
    """The trackers the config enables (main process only: DefaultTrainer.build_writers)."""
    writers: List[EventWriter] = []
    if cfg.WANDB.ENABLED:
        writers.append(WandbWriter(cfg, start_iter))
    if cfg.MLFLOW.ENABLED:
        writers.append(MLflowWriter(cfg, start_iter))
    return writers
