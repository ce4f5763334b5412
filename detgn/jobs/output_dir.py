"""What a training run may do to its OUTPUT_DIR: never write over another run, never share it with a
concurrent run, and clean up what an interrupted save left behind.

`claim_output_dir(output_dir, resume=..., overwrite=...)` runs once per job, in the process that
hosts global rank 0, before anything is written:

- without --resume, a folder holding a run (`model_final.pth`, `last_checkpoint`, a checkpoint or
  `metrics.json`) is refused with one line naming the ways out: `--resume`, a new OUTPUT_DIR, or
  `--overwrite`, which first renames the old folder to `<OUTPUT_DIR>.old-<time>` (nothing is deleted);
- a lock file (`OUTPUT_DIR/.detgn.lock`, an advisory `flock` held for the life of the process, with
  the holder's pid, host and command in it) stops a second run with a line naming the first. A run
  that died releases the lock with its process, so a stale file never blocks anything; on a file
  system without `flock` the pid is checked instead when the holder is on this host;
- `*.pth.tmp.<pid>` files of a save that a killed process never finished are removed.
"""

import errno
import json
import logging
import os
import re
import socket
import sys
import time
from typing import Optional

from detgn.utils.errors import UserInputError

__all__ = ["OutputDirError", "claim_output_dir", "run_files", "LOCK_FILE", "config_differences"]

LOCK_FILE = ".detgn.lock"
_CHECKPOINT = re.compile(r"^model_(\d{7}|final)\.pth$")
_STALE_TMP = re.compile(r"^(model_\w+\.pth|last_checkpoint)\.tmp\.(\d+)$")
_held = {}  # realpath of OUTPUT_DIR -> open lock file, kept until the process exits

logger = logging.getLogger(__name__)


class OutputDirError(UserInputError, FileExistsError):
    """OUTPUT_DIR holds another run, or a run is using it now."""


def run_files(output_dir: str):
    """The files in `output_dir` that belong to a training run (checkpoints, their tag, metrics.json)."""
    try:
        names = os.listdir(output_dir)
    except OSError:  # absent, or not a folder (reported when it is created)
        return []
    return sorted(n for n in names if _CHECKPOINT.match(n) or n in ("last_checkpoint", "metrics.json"))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_holder(path: str) -> dict:
    try:
        with open(path) as f:
            return json.loads(f.read() or "{}")
    except (OSError, ValueError):
        return {}


def _describe(holder: dict) -> str:
    if not holder:
        return "another process"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} (started {started}: {holder.get('command', '?')})"


def _lock(output_dir: str, in_use_hint: str = "wait for it to finish or choose another OUTPUT_DIR") -> None:
    key = os.path.realpath(output_dir)
    if key in _held:
        return
    path = os.path.join(output_dir, LOCK_FILE)
    f = open(path, "a+")
    try:
        import fcntl

        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (ImportError, OSError) as e:
        if isinstance(e, OSError) and e.errno in (errno.EAGAIN, errno.EACCES):
            holder = _read_holder(path)
            f.close()
            raise OutputDirError(
                f"OUTPUT_DIR {output_dir} is in use by another run: {_describe(holder)}; {in_use_hint}"
            ) from None
        holder = _read_holder(path)  # no flock here (some network file systems): trust a live pid on this host
        if (
            holder.get("host") == socket.gethostname()
            and holder.get("pid") not in (None, os.getpid())
            and _pid_alive(holder["pid"])
        ):
            f.close()
            raise OutputDirError(
                f"OUTPUT_DIR {output_dir} is in use by another run: {_describe(holder)}; {in_use_hint}"
            ) from None
        logger.warning(
            "OUTPUT_DIR %s: file locking is not available (%s); only a run on this host is detected", output_dir, e
        )
    f.seek(0)
    f.truncate()
    f.write(
        json.dumps(
            {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "command": " ".join(sys.argv)}
        )
    )
    f.flush()
    _held[key] = f


def release_output_dir(output_dir: str) -> None:
    """Release the lock taken by claim_output_dir (done by the OS when the process exits)."""
    f = _held.pop(os.path.realpath(output_dir), None)
    if f is not None:
        f.close()


def _remove_stale_tmp(output_dir: str) -> None:
    for name in os.listdir(output_dir):
        m = _STALE_TMP.match(name)
        if m and (int(m.group(2)) == os.getpid() or not _pid_alive(int(m.group(2)))):
            try:
                os.remove(os.path.join(output_dir, name))
                logger.warning("Removed %s, left by a save that was interrupted", os.path.join(output_dir, name))
            except OSError:
                pass


def _check_movable(output_dir: str) -> None:
    """--overwrite renames OUTPUT_DIR: not possible for the current folder, one of its parents, or a mount point."""
    here, target = os.path.realpath(os.getcwd()), os.path.realpath(output_dir)
    if here == target or here.startswith(target.rstrip(os.sep) + os.sep) or os.path.ismount(target):
        what = (
            "the current folder"
            if here == target
            else ("a mount point" if os.path.ismount(target) else "a parent of the current folder")
        )
        raise OutputDirError(
            f"--overwrite cannot move OUTPUT_DIR {output_dir} aside: it is {what}; choose a subfolder as OUTPUT_DIR "
            "(e.g. OUTPUT_DIR output/run2)"
        )


def lock_for_evaluation(output_dir: str) -> None:
    """--eval-only writes its log, config_eval.yaml and inference/ into OUTPUT_DIR: not into the folder of a run that
    is still going (its log.txt would interleave, its evaluation files be replaced). Holds the lock while it runs."""
    os.makedirs(output_dir, exist_ok=True)
    _lock(
        output_dir,
        in_use_hint="--eval-only would mix its log and results into that run's files; evaluate into another folder "
        f"(e.g. OUTPUT_DIR {output_dir.rstrip(os.sep)}/eval) - MODEL.WEIGHTS can stay where it is",
    )


def claim_output_dir(
    output_dir: str, *, resume: bool, overwrite: bool = False, now: Optional[float] = None
) -> Optional[str]:
    """Check and lock OUTPUT_DIR for a training run (see the module docstring). Returns the folder the
    old run was moved to with `overwrite`, else None. Raises OutputDirError."""
    if resume and overwrite:
        raise OutputDirError(
            "--resume and --overwrite contradict each other: --resume continues the run in OUTPUT_DIR, "
            "--overwrite moves it aside; pass one"
        )
    moved = None
    existing = run_files(output_dir)
    if existing and not resume:
        if not overwrite:
            shown = ", ".join(existing[:4]) + (f" and {len(existing) - 4} more" if len(existing) > 4 else "")
            raise OutputDirError(
                f"OUTPUT_DIR {output_dir} holds another run ({shown}); continue it with --resume, choose a new "
                f"OUTPUT_DIR, or pass --overwrite to move it to {output_dir.rstrip(os.sep)}.old-<time> first"
            )
        _check_movable(output_dir)
        _lock(output_dir)  # not while another run uses it
        release_output_dir(output_dir)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now or time.time()))
        moved = f"{output_dir.rstrip(os.sep)}.old-{stamp}"
        k = 1
        while os.path.exists(moved):
            moved = f"{output_dir.rstrip(os.sep)}.old-{stamp}-{k}"
            k += 1
        try:
            os.rename(output_dir, moved)
        except OSError as e:
            raise OutputDirError(
                f"--overwrite could not move OUTPUT_DIR {output_dir} to {moved} ({e.strerror}); move it yourself or "
                "choose another OUTPUT_DIR"
            ) from None
    try:
        os.makedirs(output_dir, exist_ok=True)
    except OSError as e:
        raise OutputDirError(
            f"OUTPUT_DIR {output_dir} is not writable: it cannot be created ({e.strerror}); choose another with "
            "OUTPUT_DIR <dir>"
        ) from None
    try:
        _lock(output_dir)
    except OSError as e:
        if isinstance(e, OutputDirError):
            raise
        raise OutputDirError(
            f"OUTPUT_DIR {output_dir} is not writable ({e.strerror}); choose another with OUTPUT_DIR <dir>"
        ) from None
    _remove_stale_tmp(output_dir)
    return moved


def _flatten(node, prefix=""):
    out = {}
    for k, v in node.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _as_lists(value):
    """Tuples and lists compare equal at any depth (config.yaml writes the tuples of a config as lists)."""
    return [_as_lists(v) for v in value] if isinstance(value, (list, tuple)) else value


def config_differences(output_dir: str, cfg, limit: int = 3) -> Optional[str]:
    """How `cfg` differs from the config of the run in `output_dir` (its config.yaml), as 'KEY there -> here'
    items; None when they are equal, or when the folder has no config.yaml (nothing to compare with)."""
    path = os.path.join(output_dir, "config.yaml")
    if not os.path.isfile(path):
        return None
    from detgn.config import get_cfg, get_classifier_cfg

    saved = get_classifier_cfg() if "CLASSIFIER" in cfg else get_cfg()
    try:
        saved.merge_from_file(path)
    except Exception as e:  # noqa: BLE001 - a broken or foreign file is reported as a difference
        return f"{path} cannot be read ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
    there, here = _flatten(saved), _flatten(cfg)
    keys = sorted(k for k in set(there) | set(here) if _as_lists(there.get(k)) != _as_lists(here.get(k)))
    if not keys:
        return None
    shown = "; ".join(f"{k} {there.get(k, '(absent)')!r} there, {here.get(k, '(absent)')!r} here" for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")
