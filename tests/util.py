"""What every test module shares: the repository root and the tools as importable modules."""

import importlib
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(REPO, "tools")


def tool_module(name: str):
    """tools/<name>.py imported as a module (tools/ is not a package), without leaving tools/ on sys.path."""
    if name in sys.modules:
        return sys.modules[name]
    sys.path.insert(0, TOOLS)
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(TOOLS)
