#!/usr/bin/env python3
"""detgn quick start. Needs only Python >= 3.10; installs what it needs into ./.venv first.

    python3 quickstart.py demo   # train GN Mask R-CNN on the bundled nuclei data, evaluate, draw predictions
    python3 quickstart.py test   # run the test suite

demo takes config overrides as trailing KEY VALUE pairs, passed to tools/train_net.py, e.g.
    python3 quickstart.py demo SOLVER.MAX_ITER 600 SOLVER.STEPS "(500,)" OUTPUT_DIR output/longer
A second demo into the same OUTPUT_DIR is refused (the first run's results are kept); add
--overwrite to move the earlier run to <OUTPUT_DIR>.old-<time> and start again.
"""

import os
import subprocess
import sys
import time
import venv

ROOT = os.path.dirname(os.path.abspath(__file__))
VENV = os.path.join(ROOT, ".venv")
PY = os.path.join(VENV, "bin", "python")
STAMP = os.path.join(VENV, ".detgn-installed")
# torch/torchvision: these releases come from the local wheel cache on the project machines;
# elsewhere pip falls back to any release the range in setup.py allows.
TORCH_PINNED = ["torch==2.14.1", "torchvision==0.29.1"]


def _run(cmd, **kw):
    print("+ " + " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=ROOT, **kw)


def install(extra):
    """Install torch and detgn with `extra` ("demo": what the demo runs; "dev": also the test suite's tools) into
    ./.venv, once: a stamp records what is installed, and setup.py changing makes it install again."""
    setup_mtime = os.path.getmtime(os.path.join(ROOT, "setup.py"))
    if os.path.exists(STAMP) and os.path.getmtime(STAMP) >= setup_mtime and os.path.exists(PY):
        have = open(STAMP).read().split()
        if extra in have:
            return
    else:
        have = []
    if not os.path.exists(PY):
        print(f"creating virtual environment {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    pip = [PY, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    if _run(pip + TORCH_PINNED) != 0:
        print("pinned torch/torchvision unavailable; installing from the setup.py range", flush=True)
        if _run(pip + ["torch>=2.0", "torchvision>=0.15"]) != 0:
            sys.exit("error: could not install torch/torchvision")
    if _run(pip + ["-e", f".[{extra}]"]) != 0:
        sys.exit("error: could not install detgn and its dependencies")
    if extra == "dev":
        # the lvis package, for the tests only: the reference hotcoco's LVIS evaluation is checked against. Pure
        # Python on numpy/pycocotools/matplotlib/cv2 (all installed above); --no-deps keeps its pinned opencv-python
        # from landing beside opencv-python-headless
        if _run(pip + ["--no-deps", "lvis==0.5.3"]) != 0:
            print("warning: could not install lvis; the tests against it will be skipped", flush=True)
    # "dev" includes everything "demo" needs
    open(STAMP, "w").write(" ".join(sorted(set(have + [extra] + (["demo"] if extra == "dev" else [])))) + "\n")


def demo_command(overrides):
    """tools/train_net.py on the quick-start config, with the user's KEY VALUE overrides after the defaults
    (so OUTPUT_DIR given there wins). Returns (command, output dir)."""
    flags = [o for o in overrides if o == "--overwrite"]
    overrides = [o for o in overrides if o != "--overwrite"]
    if len(overrides) % 2:
        raise ValueError(f"overrides come as KEY VALUE pairs; got an odd number: {' '.join(overrides)}")
    out = os.path.join("output", "quickstart")
    for key, value in zip(overrides[::2], overrides[1::2]):
        if key == "OUTPUT_DIR":
            out = value
    cmd = (
        [PY, "tools/train_net.py", "--config-file", "configs/nuclei_quickstart.yaml"]
        + flags
        + ["OUTPUT_DIR", os.path.join("output", "quickstart")]
    )
    return cmd + list(overrides), out


def main(argv):
    if not argv or argv[0] not in ("demo", "test") or (argv[0] == "test" and len(argv) > 1):
        print(__doc__)
        return 2
    try:
        cmd, out = demo_command(argv[1:]) if argv[0] == "demo" else (None, None)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    started = time.time()
    install("demo" if argv[0] == "demo" else "dev")
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(min(os.cpu_count() or 2, 16)))
    if argv[0] == "test":
        # 2 workers of 1 thread each (tests/conftest.py): the many subprocess and Python-bound tests overlap
        return _run([PY, "-m", "pytest", "-q", "-n", "2", "tests"], env=env)
    rc = _run(cmd, env=env)
    minutes, seconds = divmod(int(time.time() - started), 60)
    if rc == 0:
        print(
            f"\ndone in {minutes} min {seconds:02d} s (install included): metrics in {out}/metrics.json, "
            f"plots {out}/*.png, predictions {out}/predictions/*.png"
        )
    else:
        print(f"\nfailed after {minutes} min {seconds:02d} s (exit status {rc})")
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
