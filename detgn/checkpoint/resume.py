"""Which checkpoint `--resume` continues from, and what to tell the user when OUTPUT_DIR's
`last_checkpoint` tag is missing, empty, truncated or names a file that is gone."""

import os
import re
from typing import List, Optional, Tuple

from detgn.utils.errors import UserInputError

__all__ = ["ResumeError", "checkpoints_in", "find_resumable", "check_same_view"]

_CHECKPOINT = re.compile(r"^model_(\d{7}|final)\.pth$")


class ResumeError(UserInputError, FileNotFoundError):
    """OUTPUT_DIR has checkpoints, but its last_checkpoint tag does not point to one of them."""


def checkpoints_in(output_dir: str) -> List[str]:
    """Checkpoint file names in `output_dir`, oldest first (model_final.pth last)."""
    try:
        names = [n for n in os.listdir(output_dir) if _CHECKPOINT.match(n)]
    except OSError:
        return []
    return sorted(names, key=lambda n: (n == "model_final.pth", n))


def find_resumable(output_dir: str) -> Tuple[Optional[str], Optional[str]]:
    """(path of the checkpoint `last_checkpoint` names, None), or (None, a one-line problem naming the
    checkpoints that exist and how to resume from the newest), or (None, None) when there is nothing."""
    tag = os.path.join(output_dir, "last_checkpoint")
    found = checkpoints_in(output_dir)
    reason = None
    try:
        with open(tag) as f:
            name = f.read().strip()
    except FileNotFoundError:
        name = None
    except (OSError, UnicodeDecodeError) as e:
        name, reason = "", f"unreadable ({e})"
    if name is None and not found:
        return None, None
    if name and os.path.isfile(os.path.join(output_dir, name)) and os.sep not in name:
        return os.path.join(output_dir, name), None
    if name is None:
        reason = "missing"
    elif name == "":
        reason = reason or "empty"
    else:
        reason = f"names {name!r}, which is not a checkpoint in that folder"
    if not found:
        return None, f"{tag} is {reason} and {output_dir} holds no model_*.pth; start a new run (without --resume)"
    newest = found[-1]
    return None, (
        f"{tag} is {reason}; checkpoints there: {', '.join(found)}. To resume from the newest: "
        f"echo {newest} > {tag}, then run again with --resume"
    )


def check_same_view(output_dir: str, views: List[Tuple[str, Optional[str]]]) -> None:
    """`views[rank]` = (host, the checkpoint name and size that rank found in `output_dir`, or None); every rank
    must see the same one before a resume, or ranks would continue from different iterations. Raises
    ResumeError naming the hosts that differ from rank 0 (typically: OUTPUT_DIR is on a disk local to each
    machine, and only rank 0's has the checkpoints)."""
    first = views[0][1]
    differ = [(r, host, seen) for r, (host, seen) in enumerate(views) if seen != first]
    if not differ:
        return
    r, host, seen = differ[0]
    what = lambda v: v or "no checkpoint"
    raise ResumeError(
        f"--resume: rank 0 (host {views[0][0]}) finds {what(first)} in {output_dir} but rank {r} (host {host}) finds "
        f"{what(seen)}{f' (and {len(differ) - 1} more ranks differ)' if len(differ) > 1 else ''}: OUTPUT_DIR must be a "
        "folder every machine shares (only rank 0 writes it); copy it to every machine or use a shared file system"
    )
