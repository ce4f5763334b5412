"""Logging set-up: console (rank 0 with colour-free short format) and log.txt in the output dir."""

import functools
import logging
import os
import sys

__all__ = ["setup_logger"]


@functools.lru_cache()
def setup_logger(output: str = None, distributed_rank: int = 0, name: str = "detgn") -> logging.Logger:
    """Configure the `name` logger (and the root "detgn"/"__main__" users): INFO to stdout on rank 0,
    and to `output`/log.txt (or log.txt.rank{r} on other ranks) when `output` is given. The handlers of an earlier
    call are closed and replaced (a second run in one process does not log each line twice, nor into the first
    run's log.txt)."""
    logger = logging.getLogger(name)
    for old in [h for h in logger.handlers if getattr(h, "_detgn_setup", False)]:
        logger.removeHandler(old)
        old.close()
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    fmt = logging.Formatter("[%(asctime)s %(name)s %(levelname)s] %(message)s", datefmt="%m/%d %H:%M:%S")
    if distributed_rank == 0:
        ch = logging.StreamHandler(stream=sys.stdout)
        ch.setLevel(logging.INFO)
        ch.setFormatter(fmt)
        ch._detgn_setup = True
        logger.addHandler(ch)
    if output is not None:
        filename = output if output.endswith((".txt", ".log")) else os.path.join(output, "log.txt")
        if distributed_rank > 0:
            filename = filename + f".rank{distributed_rank}"
        os.makedirs(os.path.dirname(os.path.abspath(filename)), exist_ok=True)
        fh = logging.FileHandler(filename, mode="a")
        fh.setLevel(logging.DEBUG)
        fh.setFormatter(fmt)
        fh._detgn_setup = True
        logger.addHandler(fh)
    return logger
