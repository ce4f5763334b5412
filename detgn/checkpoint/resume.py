"""Which checkpoint `--resume` continues from, and what to tell the user when OUTPUT_DIR's
`last_checkpoint` tag is missing, empty, truncated or names a file that is gone."""
import os
import re
from typing import List, Optional, Tuple

from detgn.utils.errors import UserInputError

__all__ = ["ResumeError", "checkpoints_in", "find_resumable"]

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
    return None, (f"{tag} is {reason}; checkpoints there: {', '.join(found)}. To resume from the newest: "
                  f"echo {newest} > {tag}, then run again with --resume")
