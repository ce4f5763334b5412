"""Untrusted files never run code: malicious weights pickles and YAML tags are refused by name."""

import os
import pickle

import numpy as np
import pytest
import torch

from detgn.checkpoint import DetectionCheckpointer
from detgn.checkpoint.formats import UnsafePickleError, load_any_file
from detgn.config import CircularBaseError, UnsafeConfigError, get_cfg

from tests.util import QUICK, REPO, tool_module


class _Payload:
    """Unpickling this calls os.system, which creates the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def evil_files(tmp_path):
    marker = tmp_path / "PWNED"
    pkl = tmp_path / "evil.pkl"
    with open(pkl, "wb") as f:  # a detectron2-looking pickle with a payload among the weights
        pickle.dump(
            {
                "model": {"backbone.fpn_lateral2.weight": np.zeros((4, 4, 1, 1), np.float32), "x": _Payload(marker)},
                "__author__": "evil",
            },
            f,
            protocol=2,
        )
    pth = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(2)}, "extra": _Payload(marker)}, pth)  # a torch zip file with a payload
    renamed = tmp_path / "evil_pickle_named.pth"
    renamed.write_bytes(pkl.read_bytes())
    return marker, [pkl, pth, renamed]


def test_load_any_file_refuses_payloads(evil_files):
    marker, files = evil_files
    for f in files:
        with pytest.raises(ValueError, match=r"evil.*(posix|os)\.system|Refusing|Weights only load failed|neither"):
            load_any_file(str(f))
    assert not marker.exists()


def test_model_weights_refuses_payload(evil_files):
    from detgn.modeling import build_model

    marker, files = evil_files
    cfg = get_cfg()
    cfg.merge_from_file(QUICK)
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    for f in files:
        with pytest.raises(ValueError):
            DetectionCheckpointer(model).load(str(f))
    assert not marker.exists()


@pytest.mark.parametrize("tool", ["demo", "convert_weights"])
def test_tools_refuse_payload(tmp_path, evil_files, tool, capsys):
    """tools/demo.py and tools/convert_weights.py (run in this process) refuse each file in one line naming it,
    write nothing, and the payload never runs."""
    marker, files = evil_files
    val = os.path.join(REPO, "datasets", "nuclei_mini", "val")
    img = os.path.join(val, sorted(os.listdir(val))[0])
    for f in files:
        if tool == "demo":
            argv = ["--config-file", QUICK, "--input", img, "--output", str(tmp_path / "vis"), "MODEL.WEIGHTS", str(f)]
        else:
            argv = [str(f), str(tmp_path / "out.pth"), "--config-file", QUICK]
        try:
            status = tool_module(tool).main(argv)
        except SystemExit as e:
            status = e.code
        err = capsys.readouterr().err
        assert status not in (0, None) and "Traceback" not in err, err[-1500:]
        assert os.path.basename(str(f)) in err
        assert not (tmp_path / "out.pth").exists()
        assert not (tmp_path / "vis").exists() or not os.listdir(tmp_path / "vis")  # no picture written
    assert not marker.exists()


def test_real_layouts_still_load(tmp_path):
    """A Detectron-style protocol-2 pickle (bytes keys decoded as latin1) and a detectron2 .pkl."""
    c2 = tmp_path / "R-50-GN.pkl"
    blobs = {
        "conv1_w": np.ones((64, 3, 7, 7), np.float32),
        "conv1_gn_s": np.ones(64, np.float32),
        "res2_0_branch2a_w": np.ones((64, 64, 1, 1), np.float32),
        "pred_w": np.zeros((1000, 2048), np.float32),
        "conv1_gn_s_momentum": np.float32(0.9),
    }
    with open(c2, "wb") as f:
        pickle.dump({"blobs": blobs}, f, protocol=2)
    obj = load_any_file(str(c2))
    assert obj["blobs"]["conv1_w"].shape == (64, 3, 7, 7)
    d2 = tmp_path / "model_final.pkl"
    with open(d2, "wb") as f:
        pickle.dump(
            {
                "model": {"backbone.fpn_lateral2.weight": np.ones((2, 2, 1, 1), np.float32)},
                "__author__": "Detectron2 Model Zoo",
                "matching_heuristics": True,
            },
            f,
        )
    obj = load_any_file(str(d2))
    assert (
        obj["__author__"] == "Detectron2 Model Zoo" and obj["model"]["backbone.fpn_lateral2.weight"].dtype == np.float32
    )


def test_python2_pickle_bytes(tmp_path):
    """Python 2 writes str as STRING opcodes; they decode as latin1 (no global needed)."""
    p = tmp_path / "py2.pkl"
    # protocol 2 pickle of {'blobs': {'conv1_w': <array>}} as Python 2 writes the keys ('U' = SHORT_BINSTRING)
    arr = pickle.dumps(np.arange(3, dtype=np.float32), protocol=2)
    body = b"\x80\x02}q\x00U\x05blobsq\x01}q\x02U\x07conv1_wq\x03" + arr[2:-1] + b"ss."
    p.write_bytes(body)
    obj = load_any_file(str(p))
    assert list(obj["blobs"]["conv1_w"]) == [0.0, 1.0, 2.0]


def test_yaml_python_tag_is_refused(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"SOLVER:\n  BASE_LR: !!python/object/apply:os.system ['touch {marker}']\n")
    cfg = get_cfg()
    with pytest.raises(UnsafeConfigError, match="bad.yaml .line 2.*safe_load"):
        cfg.merge_from_file(str(bad))
    assert not marker.exists()
    assert tool_module("train_net").cli(["--config-file", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "safe_load" in err and "Traceback" not in err
    assert not marker.exists()


def test_circular_base_is_named(tmp_path):
    (tmp_path / "a.yaml").write_text("_BASE_: b.yaml\nSOLVER:\n  BASE_LR: 0.1\n")
    (tmp_path / "b.yaml").write_text("_BASE_: a.yaml\n")
    with pytest.raises(CircularBaseError, match=r"circular _BASE_: a.yaml -> b.yaml -> a.yaml"):
        get_cfg().merge_from_file(str(tmp_path / "a.yaml"))
    (tmp_path / "c.yaml").write_text("_BASE_: c.yaml\n")
    with pytest.raises(CircularBaseError, match=r"c.yaml -> c.yaml"):
        get_cfg().merge_from_file(str(tmp_path / "c.yaml"))
    # a diamond (two files sharing one base) is not a cycle
    (tmp_path / "base.yaml").write_text("SOLVER:\n  BASE_LR: 0.5\n")
    (tmp_path / "l.yaml").write_text("_BASE_: base.yaml\n")
    (tmp_path / "r.yaml").write_text("_BASE_: [l.yaml, base.yaml]\nSOLVER:\n  MAX_ITER: 7\n")
    cfg = get_cfg()
    cfg.merge_from_file(str(tmp_path / "r.yaml"))
    assert cfg.SOLVER.BASE_LR == 0.5 and cfg.SOLVER.MAX_ITER == 7


class _Server:
    """A local HTTP server: /full sends the whole body, /short announces more bytes than it sends."""

    def __init__(self, body: bytes):
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", str(len(body) + (100 if self.path.startswith("/short") else 0)))
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *a):
                pass

        self.httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_download_is_atomic_and_goes_through_the_safe_loader(tmp_path, monkeypatch):
    from detgn.checkpoint.paths import WeightsNotFoundError, resolve_weights_path

    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))
    good = tmp_path / "w.pth"
    torch.save({"model": {"a": torch.ones(3)}}, good)
    srv = _Server(good.read_bytes())
    try:
        with pytest.raises(WeightsNotFoundError, match="incomplete download"):
            resolve_weights_path(srv.url + "/short/w.pth")
        cache = tmp_path / "cache" / "short"
        assert not cache.exists() or os.listdir(cache) == []  # no partial file left, nothing cached
        local = resolve_weights_path(srv.url + "/full/w.pth")
        assert local == str(tmp_path / "cache" / "full" / "w.pth")
        assert torch.equal(load_any_file(local)["model"]["a"], torch.ones(3))
        assert resolve_weights_path(srv.url + "/full/w.pth") == local  # cached: no second download
    finally:
        srv.close()
    evil = tmp_path / "evil_dl.pkl"
    with open(evil, "wb") as f:
        pickle.dump({"x": _Payload(tmp_path / "PWNED")}, f)
    srv = _Server(evil.read_bytes())
    try:
        local = resolve_weights_path(srv.url + "/full/evil_dl.pkl")
        with pytest.raises(UnsafePickleError):
            load_any_file(local)
    finally:
        srv.close()
    assert not (tmp_path / "PWNED").exists()


def test_weights_errors_name_the_format_and_never_suggest_unsafe_loading(tmp_path):
    """Empty file, payload in a zip or legacy torch file, truncated zip: one line that names what was found."""
    import pickle as _pickle

    from detgn.checkpoint.formats import UnsafePickleError, WeightsFormatError, load_any_file

    class Payload:
        def __reduce__(self):
            return (os.getcwd, ())

    (tmp_path / "empty.pth").write_bytes(b"")
    torch.save({"model": {"a": torch.zeros(1)}, "x": Payload()}, tmp_path / "zip.pth")
    torch.save(
        {"model": {"a": torch.zeros(1)}, "x": Payload()}, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False
    )
    (tmp_path / "trunc.pth").write_bytes((tmp_path / "zip.pth").read_bytes()[:200])
    (tmp_path / "plain.pkl").write_bytes(_pickle.dumps({"x": Payload()}))
    cases = {
        "empty.pth": (WeightsFormatError, "is empty (0 bytes)"),
        "zip.pth": (UnsafePickleError, "torch checkpoint (zip) asks for"),
        "legacy.pth": (UnsafePickleError, "legacy torch checkpoint asks for"),
        "trunc.pth": (WeightsFormatError, "truncated or corrupted"),
        "plain.pkl": (UnsafePickleError, "asks for the Python global"),
    }
    for name, (cls, words) in cases.items():
        with pytest.raises(cls) as e:
            load_any_file(str(tmp_path / name))
        msg = str(e.value)
        assert words in msg and name in msg and "weights_only" not in msg and "\n" not in msg, msg
        if cls is UnsafePickleError:
            assert "getcwd" in msg
