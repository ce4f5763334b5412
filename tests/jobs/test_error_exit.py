"""train_net's exit codes: a problem in the user's input is one line and status 2; a bug keeps its traceback."""

import importlib
import os

import pytest

from detgn.data.datasets.coco import DatasetFormatError
from detgn.utils.errors import ConfigValueError, UserInputError

from tests.engine.util import QUICK, REPO


@pytest.fixture
def train_net(monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(REPO, "tools"))
    return importlib.import_module("train_net")


def _with_launch_raising(monkeypatch, train_net, exc):
    def launch(*args, **kwargs):
        raise exc

    monkeypatch.setattr(train_net, "launch", launch)


def test_user_input_error_is_one_line_and_status_2(monkeypatch, capsys, train_net, tmp_path):
    _with_launch_raising(monkeypatch, train_net, DatasetFormatError("ann.json: annotation 3 has a negative width"))
    assert train_net.cli(["--config-file", QUICK, "OUTPUT_DIR", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: ann.json: annotation 3 has a negative width"


def test_a_bug_keeps_its_traceback(monkeypatch, train_net, tmp_path):
    """A ValueError that is not a user-input error (e.g. a shape bug inside the model) is not hidden as status 2."""
    _with_launch_raising(monkeypatch, train_net, ValueError("operands could not be broadcast together"))
    with pytest.raises(ValueError, match="broadcast"):
        train_net.cli(["--config-file", QUICK, "OUTPUT_DIR", str(tmp_path)])


def test_bad_config_value_found_when_read_is_status_2(capsys, train_net, tmp_path):
    """INPUT.RANDOM_FLIP is checked when the config is read (config/rules.py), before anything is written."""
    rc = train_net.cli(["--config-file", QUICK, "OUTPUT_DIR", str(tmp_path / "o"), "INPUT.RANDOM_FLIP", "diagonal"])
    err = capsys.readouterr().err
    assert (
        rc == 2
        and "INPUT.RANDOM_FLIP = 'diagonal': must be one of 'horizontal', 'vertical', 'none'" in err
        and "Traceback" not in err
    )
    assert not (tmp_path / "o").exists()


def test_error_classes_keep_their_builtin_bases():
    """Callers that catch ValueError / KeyError / FileNotFoundError keep working."""
    from detgn.checkpoint.paths import WeightsNotFoundError
    from detgn.config.config import ConfigKeyError
    from detgn.data.catalog import DatasetCatalog, UnknownDatasetError

    assert issubclass(ConfigValueError, ValueError) and issubclass(DatasetFormatError, ValueError)
    assert issubclass(WeightsNotFoundError, FileNotFoundError) and issubclass(ConfigKeyError, KeyError)
    with pytest.raises(KeyError) as e:
        DatasetCatalog.get("no_such_dataset_xyz")
    assert isinstance(e.value, UnknownDatasetError) and isinstance(e.value, UserInputError)
    assert str(e.value).startswith("Dataset 'no_such_dataset_xyz' is not registered")
