"""quickstart.py: the demo passes overrides on and names its output; test installs the dev extra."""

from tests.util import REPO, TINY_MODEL

TINY = TINY_MODEL


def test_quickstart_demo_passes_overrides_and_names_the_output(monkeypatch, capsys):
    monkeypatch.syspath_prepend(REPO)
    import quickstart

    cmd, out = quickstart.demo_command(["SOLVER.MAX_ITER", "10", "OUTPUT_DIR", "output/short"])
    assert cmd[-4:] == ["SOLVER.MAX_ITER", "10", "OUTPUT_DIR", "output/short"] and out == "output/short"
    assert cmd.index("--config-file") < cmd.index("SOLVER.MAX_ITER")
    ran, installed = [], []
    monkeypatch.setattr(quickstart, "install", installed.append)
    monkeypatch.setattr(quickstart, "_run", lambda c, **kw: ran.append(c) or 0)
    assert quickstart.main(["demo", "SOLVER.MAX_ITER", "10"]) == 0
    assert ran[0][-2:] == ["SOLVER.MAX_ITER", "10"]
    assert installed == ["demo"]  # the demo's extra only; `test` installs dev
    assert "done in" in capsys.readouterr().out
    assert quickstart.main(["test"]) == 0 and installed == ["demo", "dev"] and ran[1][1:4] == ["-m", "pytest", "-q"]
    capsys.readouterr()
    assert quickstart.main(["demo", "SOLVER.MAX_ITER"]) == 2  # odd number: refused before installing anything
    assert "KEY VALUE pairs" in capsys.readouterr().err
    assert quickstart.main(["test", "x"]) == 2
    cmd, _ = quickstart.demo_command(["SOLVER.MAX_ITER", "10", "--overwrite"])  # a second demo into the same folder
    assert "--overwrite" in cmd and cmd[-2:] == ["SOLVER.MAX_ITER", "10"]
