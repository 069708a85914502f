"""jepsen-style/ has a hyphen (not importable as a package): put it on sys.path."""

import pathlib
import sys

JEPSEN_DIR = pathlib.Path(__file__).resolve().parents[2] / "jepsen-style"
if str(JEPSEN_DIR) not in sys.path:
    sys.path.insert(0, str(JEPSEN_DIR))
