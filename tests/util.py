"""What every test module shares: the repository root and the tools as importable modules."""

import importlib
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(REPO, "tools")
# a few iterations of the GN Mask R-CNN on the bundled nuclei data (configs/quick_schedules)
QUICK = os.path.join(REPO, "configs", "quick_schedules", "mask_rcnn_R_50_FPN_gn_instant_test.yaml")


# A narrow GN Mask R-CNN: ResNet-18, 64-channel FPN, box and mask heads (still GN everywhere, 4conv1fc box head,
# 4-conv mask head). The one list of these overrides; each test adds what it needs (FC_DIM, ROIs, proposals).
NARROW_MODEL = [
    "MODEL.RESNETS.DEPTH",
    "18",
    "MODEL.RESNETS.RES2_OUT_CHANNELS",
    "64",
    "MODEL.FPN.OUT_CHANNELS",
    "64",
    "MODEL.ROI_BOX_HEAD.CONV_DIM",
    "64",
    "MODEL.ROI_MASK_HEAD.CONV_DIM",
    "64",
]
# NARROW_MODEL with a 128-wide box head fc: what the tool tests train and run
TINY_MODEL = NARROW_MODEL + ["MODEL.ROI_BOX_HEAD.FC_DIM", "128"]


# tools/train_net.py arguments of the one finished run that several tests read (the quick_run fixture, conftest.py), and of any
# later command on that run (--eval-only of its weights must use the same test sizes to give the same detections)
QUICK_RUN_ARGS = [
    "SOLVER.MAX_ITER",
    "4",
    "TEST.EVAL_PERIOD",
    "2",
    "SOLVER.CHECKPOINT_PERIOD",
    "100",
    "TEST.VIS_PERIOD_IMAGES",
    "1",
    "INPUT.MIN_SIZE_TEST",
    "96",
    "INPUT.MAX_SIZE_TEST",
    "160",
]


def tool_module(name: str):
    """tools/<name>.py imported as a module (tools/ is not a package), without leaving tools/ on sys.path."""
    if name in sys.modules:
        return sys.modules[name]
    sys.path.insert(0, TOOLS)
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(TOOLS)


def run_tool_here(name: str, argv, capsys):
    """tools/<name>.py run in this process, as its command line would: main(argv) (cli(argv) for the training
    tools). Returns (status, stdout, stderr); an argparse exit is its status. Saves the ~6 s a Python process
    with torch takes to start; for tools that set up no logging of their own (train_net's refusals come first)."""
    module = tool_module(name)
    entry = getattr(module, "cli", None) or module.main
    try:
        status = entry(list(argv))
    except SystemExit as e:
        status = e.code
    captured = capsys.readouterr()
    return (0 if status is None else status), captured.out, captured.err


def run_tool(name: str, *args, cwd: str = REPO, timeout: float = 600, threads: int = 2):
    """tools/<name> in a subprocess (its own Python, as a user runs it): CompletedProcess with text output."""
    import subprocess

    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=REPO)
    return subprocess.run(
        [sys.executable, os.path.join(TOOLS, name)] + list(args),
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )


def run_tools(*calls, cwd: str = REPO, timeout: float = 600):
    """Several tool runs side by side (independent ones only): [(name, *args), ...] -> CompletedProcess each, in order.
    Half of a short tool run is Python and torch starting, which two cores can overlap."""
    import subprocess

    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    procs = [
        subprocess.Popen(
            [sys.executable, os.path.join(TOOLS, call[0])] + list(call[1:]),
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for call in calls
    ]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=timeout)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


def edit_json(path: str, fn):
    """Load the json at `path`, let fn change it in place, write it back (NaN allowed, as broken files hold them)."""
    import json

    with open(path) as f:
        data = json.load(f)
    fn(data)
    with open(path, "w") as f:
        f.write(json.dumps(data, allow_nan=True))
    return data


def rel_close(a, b, rel: float = 1e-4) -> bool:
    """max |a - b| <= rel x max |a| (tensors)."""
    scale = max(a.abs().max().item(), 1e-6)
    return (a - b).abs().max().item() <= rel * scale


def endless(make):
    """A loader that yields make() forever (the toy loaders of the trainer tests)."""
    while True:
        yield make()
