#!/usr/bin/env python3
"""Side-by-side benchmark of kvstore, etcd, Redis and PySyncObj (see kvstore/bench/compare.py).

    .venv/bin/python scripts/compare.py --workloads W,B --duration 10
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from kvstore.bench.compare import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
