"""detgn/checkpoint/detection_checkpoint.py: a save killed halfway leaves the previous checkpoint in charge."""

import subprocess
import sys
import textwrap

from torch import nn

from detgn.checkpoint import DetectionCheckpointer

from tests.engine.util import REPO


def test_interrupted_save_leaves_previous_checkpoint(tmp_path):
    # a child process saves once, then is SIGKILLed in the middle of writing the second checkpoint
    script = textwrap.dedent(f"""
        import os, signal, sys, torch
        sys.path.insert(0, {REPO!r})
        from torch import nn
        from detgn.checkpoint import DetectionCheckpointer
        model = nn.Linear(1000, 1000)
        ck = DetectionCheckpointer(model, {str(tmp_path)!r})
        ck.save("model_0000001", iteration=1)
        real_save = torch.save
        def dying_save(obj, f, *a, **k):
            f.write(b"PK\\x03\\x04 partial bytes of a zip")
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        torch.save = dying_save
        with torch.no_grad():
            model.weight.add_(1)
        ck.save("model_0000003", iteration=3)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert r.returncode == -9
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert not (tmp_path / "model_0000003.pth").exists()
    model = nn.Linear(1000, 1000)
    ck = DetectionCheckpointer(model, str(tmp_path))
    extra = ck.resume_or_load("", resume=True)
    assert extra["iteration"] == 1
