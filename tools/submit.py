#!/usr/bin/env python
"""Submit a detgn training run to SLURM through submitit; the job requeues itself at its time limit and
resumes exactly (docs/multi_machine.md).

    python tools/submit.py --nodes 4 --gpus-per-node 8 --partition learnfair --time 72:00:00 -- \\
        --config-file configs/GN/mask_rcnn_R_50_FPN_3x_gn.yaml OUTPUT_DIR /checkpoint/me/gn_3x

Everything after `--` goes to tools/train_net.py. `--dry-run` prints the sbatch script instead of
submitting; `--executor local` runs the job as local processes (submitit's LocalExecutor), the same code
path without a cluster; `--wait` waits for the job and reports how it ended.
"""

import argparse
import os
import re
import shlex
import sys
from typing import Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detgn.jobs.submit import SubmitError  # noqa: E402
from detgn.utils.errors import UserInputError  # noqa: E402

# the training tool a job runs unless --tool names another: the one beside this file
DEFAULT_TOOL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_net.py")
# train_net options that the job decides (one process per task, ranks from the job)
_JOB_OWNED = ("--num-gpus", "--num-machines", "--machine-rank", "--dist-url", "--overwrite")


def parse_time_minutes(text: str) -> int:
    """SLURM's time formats to whole minutes: 'MM', 'HH:MM:SS', 'D-HH', 'D-HH:MM', 'D-HH:MM:SS' (seconds round up)."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not m:
        raise SubmitError(f"--time {text!r} is not a SLURM time (MM, HH:MM:SS or D-HH:MM:SS)")
    days, a, b, c = m.groups()
    # as sbatch: minutes and seconds after a colon are 0-59, hours after a day count 0-23 ('1:99:99' is refused)
    limits = [(b, 59, "minutes" if (c is not None or days is not None) else "seconds"), (c, 59, "seconds")]
    if days is not None:
        limits.append((a, 23, "hours"))
    for value, top, name in limits:
        if value is not None and int(value) > top:
            raise SubmitError(
                f"--time {text!r}: {name} {int(value)} > {top}; sbatch refuses it (formats: MM, MM:SS, HH:MM:SS, "
                "D-HH, D-HH:MM, D-HH:MM:SS)"
            )
    if days is None and b is None:  # 'MM'
        return int(a)
    if days is None and c is None:  # 'MM:SS'
        return int(a) + (int(b) > 0)
    if days is None:  # 'HH:MM:SS'
        return int(a) * 60 + int(b) + (int(c) > 0)
    hours, minutes, seconds = int(a), int(b or 0), int(c or 0)
    return int(days) * 1440 + hours * 60 + minutes + (seconds > 0)


def _extra_sbatch(pairs: List[str]) -> Dict[str, object]:
    extra = {}
    for p in pairs:
        key, eq, value = p.partition("=")
        key = key.strip().lstrip("-")
        if not key or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", key):
            raise SubmitError(
                f"--sbatch {p!r}: expected KEY=VALUE (e.g. --sbatch mail-type=END) or a flag KEY (e.g. --sbatch exclusive)"
            )
        extra[key.replace("-", "_")] = value if eq else True
    return extra


def slurm_parameters(
    *,
    nodes: int,
    gpus_per_node: int,
    tasks_per_node: Optional[int],
    time_minutes: int,
    partition: Optional[str],
    account: Optional[str],
    qos: Optional[str],
    constraint: Optional[str],
    job_name: str,
    cpus_per_task: Optional[int],
    mem: Optional[str],
    signal_delay_s: int,
    sbatch: List[str],
    setup: List[str],
) -> Dict[str, object]:
    """The keyword arguments of submitit's SlurmExecutor.update_parameters for a training job: one task per GPU
    (or `tasks_per_node` CPU processes), `--requeue`, the time-limit signal `signal_delay_s` seconds early."""
    if nodes < 1:
        raise SubmitError(f"--nodes must be >= 1, got {nodes}")
    tasks = tasks_per_node if tasks_per_node is not None else gpus_per_node
    if tasks < 1:
        raise SubmitError("--gpus-per-node 0 needs --tasks-per-node N (CPU processes per node, with MODEL.DEVICE cpu)")
    if gpus_per_node and tasks != gpus_per_node:
        raise SubmitError(
            f"--tasks-per-node {tasks} with --gpus-per-node {gpus_per_node}: detgn runs one process per GPU; "
            "leave --tasks-per-node out"
        )
    if time_minutes * 60 <= signal_delay_s:
        raise SubmitError(f"--time ({time_minutes} min) must be longer than --signal-delay ({signal_delay_s} s)")
    extra = {"requeue": True}
    extra.update(_extra_sbatch(sbatch))
    params = {
        "nodes": nodes,
        "ntasks_per_node": tasks,
        "time": time_minutes,
        "job_name": job_name,
        "signal_delay_s": signal_delay_s,
        "additional_parameters": extra,
    }
    if gpus_per_node:
        params["gpus_per_node"] = gpus_per_node
    for key, value in (
        ("partition", partition),
        ("account", account),
        ("qos", qos),
        ("constraint", constraint),
        ("cpus_per_task", cpus_per_task),
        ("mem", mem),
    ):
        if value is not None:
            params[key] = value
    if setup:
        params["setup"] = list(setup)
    return params


def check_training_args(argv: List[str]) -> None:
    """The training arguments must leave the job's shape to the job (no --num-gpus, --dist-url ...)."""
    for token in argv:
        name = token.split("=", 1)[0]
        if name in _JOB_OWNED:
            raise SubmitError(
                f"{name} is decided by the job (one process per task; --nodes/--gpus-per-node give the shape, a "
                "requeued job must continue its run): remove it from the training arguments"
            )
        if name == "--eval-only":
            raise SubmitError(
                "--eval-only jobs are not requeued runs; run tools/train_net.py --eval-only inside your own sbatch script"
            )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Submit a detgn training run to SLURM (submitit); it requeues itself and resumes exactly.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example (4 nodes x 8 GPUs):\n  python tools/submit.py --nodes 4 --gpus-per-node 8 --partition P "
        "--time 72:00:00 -- --config-file cfg.yaml OUTPUT_DIR /shared/runs/x\n",
    )
    p.add_argument("--nodes", type=int, default=1, help="number of machines (SLURM nodes)")
    p.add_argument("--gpus-per-node", type=int, default=8, help="GPUs per node; one training process per GPU")
    p.add_argument(
        "--tasks-per-node",
        type=int,
        default=None,
        help="CPU processes per node, with --gpus-per-node 0 and MODEL.DEVICE cpu (default: one per GPU)",
    )
    p.add_argument("--partition", default=None, help="SLURM partition (sbatch --partition)")
    p.add_argument(
        "--time",
        default="72:00:00",
        help="time limit per allocation, as sbatch takes it (MM, HH:MM:SS, D-HH:MM:SS); "
        "the job requeues itself before it",
    )
    p.add_argument("--account", default=None, help="SLURM account to charge (sbatch --account)")
    p.add_argument("--qos", default=None, help="quality of service (sbatch --qos)")
    p.add_argument("--constraint", default=None, help="node features required (sbatch --constraint, e.g. volta32gb)")
    p.add_argument(
        "--cpus-per-task", type=int, default=None, help="CPU cores per training process (data loading workers + 1)"
    )
    p.add_argument("--mem", default=None, help="memory per node (sbatch --mem, e.g. 480G; 0 means all of it)")
    p.add_argument("--job-name", default="detgn", help="SLURM job name (default: detgn)")
    p.add_argument(
        "--log-dir",
        default=None,
        help="where submitit writes the job's logs and pickles (default: OUTPUT_DIR/submitit)",
    )
    p.add_argument(
        "--signal-delay",
        type=int,
        default=120,
        metavar="SECONDS",
        help="how long before the time limit SLURM sends USR2, so that the job checkpoints and requeues (default 120)",
    )
    p.add_argument(
        "--sbatch",
        action="append",
        default=[],
        metavar="KEY[=VALUE]",
        help="any other sbatch option, repeatable (e.g. --sbatch mail-type=END --sbatch exclusive)",
    )
    p.add_argument(
        "--setup",
        action="append",
        default=[],
        metavar="COMMAND",
        help="a shell line the sbatch script runs before the tasks, repeatable (e.g. 'module load cuda/12.4')",
    )
    p.add_argument(
        "--master-port",
        type=int,
        default=None,
        help="port of the process group's store (default: 20000 + job id mod 20000)",
    )
    p.add_argument(
        "--tool",
        default=None,
        metavar="SCRIPT",
        help="the training script each task runs (default tools/train_net.py; tools/train_classifier.py works too)",
    )
    p.add_argument(
        "--executor",
        choices=("slurm", "local"),
        default="slurm",
        help="slurm (sbatch) or local (processes on this machine through submitit's LocalExecutor, for a dry rehearsal)",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print the sbatch script and the training command, submit nothing"
    )
    p.add_argument("--wait", action="store_true", help="wait for the job to end and exit with its outcome")
    p.add_argument(
        "train_args",
        nargs=argparse.REMAINDER,
        metavar="-- TRAIN_NET_ARGS",
        help="arguments of tools/train_net.py (config file, overrides), after --",
    )
    return p


def _training_cfg(train_args, tool):
    """The config of the run these training arguments describe (checked here, before queueing), with the keys
    of the tool that will run them (its default_cfg(), the detector's get_cfg when it has none)."""
    from detgn.config import get_cfg
    from detgn.jobs import default_argument_parser, parse_with_overrides, setup_cfg
    from detgn.jobs.submit import load_tool

    args = parse_with_overrides(default_argument_parser(), train_args)
    return setup_cfg(args, getattr(load_tool(tool), "default_cfg", get_cfg))


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    train_args = list(args.train_args)
    if train_args and train_args[0] == "--":
        train_args = train_args[1:]
    try:
        from detgn.jobs.submit import TrainingJob

        if not train_args:
            raise SubmitError("no training arguments: add `-- --config-file <config.yaml> [KEY VALUE ...]`")
        if args.tool and not os.path.isfile(args.tool):
            raise SubmitError(f"--tool {args.tool}: no such file")
        check_training_args(train_args)
        cfg = _training_cfg(train_args, os.path.abspath(args.tool) if args.tool else DEFAULT_TOOL)
        minutes = parse_time_minutes(args.time)
        params = slurm_parameters(
            nodes=args.nodes,
            gpus_per_node=args.gpus_per_node,
            tasks_per_node=args.tasks_per_node,
            time_minutes=minutes,
            partition=args.partition,
            account=args.account,
            qos=args.qos,
            constraint=args.constraint,
            job_name=args.job_name,
            cpus_per_task=args.cpus_per_task,
            mem=args.mem,
            signal_delay_s=args.signal_delay,
            sbatch=args.sbatch,
            setup=args.setup,
        )
        from detgn.jobs.output_dir import config_differences

        differ = config_differences(cfg.OUTPUT_DIR, cfg)
        if differ:
            raise SubmitError(
                f"OUTPUT_DIR {cfg.OUTPUT_DIR} holds a run of another config ({differ}); the job would refuse to "
                "continue it: choose a new OUTPUT_DIR"
            )
        try:
            import submitit
        except ImportError:
            raise SubmitError(
                "submitit is not installed: pip install 'detgn[slurm]' (or pip install submitit)"
            ) from None
    except UserInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    log_dir = args.log_dir or os.path.join(cfg.OUTPUT_DIR, "submitit")
    tool = os.path.abspath(args.tool) if args.tool else DEFAULT_TOOL
    job_fn = TrainingJob(train_args, tool=tool, master_port=args.master_port)
    command = shlex.join([tool] + train_args + ["--auto-resume"])
    if args.dry_run:
        from submitit.slurm.slurm import _make_sbatch_string  # the script SlurmExecutor would submit

        print(
            _make_sbatch_string(
                command=f"{sys.executable} -u -m submitit.core._submit {log_dir}/%j",
                folder=os.path.join(log_dir, "%j"),
                **params,
            )
        )
        print(f"# each task runs: {command}")
        return 0
    if args.executor == "local":
        if args.nodes != 1:
            print("error: --executor local runs on this machine only: use --nodes 1", file=sys.stderr)
            return 2
        executor = submitit.LocalExecutor(folder=log_dir)  # its controller would create a literal "%j" folder
        executor.update_parameters(
            tasks_per_node=params["ntasks_per_node"],
            gpus_per_node=params.get("gpus_per_node", 0),
            timeout_min=minutes,
            signal_delay_s=args.signal_delay,
        )
    else:
        try:
            executor = submitit.SlurmExecutor(folder=os.path.join(log_dir, "%j"), max_num_timeout=1000)
        except RuntimeError as e:  # no srun on this machine
            print(f"error: {e} (run this on a SLURM login node, or try --dry-run / --executor local)", file=sys.stderr)
            return 2
        executor.update_parameters(**params)
    job = executor.submit(job_fn)
    print(
        f"Submitted job {job.job_id} ({args.executor}: {args.nodes} node(s) x {params['ntasks_per_node']} process(es)) -> "
        f"OUTPUT_DIR {cfg.OUTPUT_DIR}"
    )
    print(
        f"Logs: {job.paths.stdout} and {job.paths.stderr} (task 0); training log: {os.path.join(cfg.OUTPUT_DIR, 'log.txt')}"
    )
    if args.executor == "slurm":
        print(
            f"Follow: squeue -j {job.job_id}; tail -f {os.path.join(cfg.OUTPUT_DIR, 'log.txt')}; stop: scancel {job.job_id} "
            "(it checkpoints first; resubmit the same command to continue)"
        )
    if not args.wait:
        return 0
    try:
        job.results()  # every task's; raises the first failure
    except Exception as e:  # noqa: BLE001 - submitit re-raises the job's failure with its log
        print(
            f"error: job {job.job_id} failed: {str(e).strip().splitlines()[-1][:300]} (full log: {job.paths.stderr})",
            file=sys.stderr,
        )
        return 1
    print(f"Job {job.job_id} finished: {os.path.join(cfg.OUTPUT_DIR, 'model_final.pth')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
