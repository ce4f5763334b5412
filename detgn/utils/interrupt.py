"""The Ctrl-C request of a running training loop, readable by the code it calls (evaluation).

The training loop turns the first Ctrl-C into a request (see engine/train_loop.py) so that it never
lands inside a C extension mid-step; long work inside a hook, such as the evaluation after the last
iteration, calls `raise_if_stop_requested()` between images to honour it there too.
"""

__all__ = ["request_stop", "clear_stop", "stop_requested", "raise_if_stop_requested"]

_requested = False


def request_stop() -> None:
    global _requested
    _requested = True


def clear_stop() -> None:
    global _requested
    _requested = False


def stop_requested() -> bool:
    return _requested


def raise_if_stop_requested(where: str = "") -> None:
    """KeyboardInterrupt when Ctrl-C was pressed during training (the CLI then exits with status 130)."""
    if _requested:
        raise KeyboardInterrupt(where)
