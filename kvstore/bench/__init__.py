"""`kvstore bench`: a YCSB-style, open-loop load generator with HDR histograms, and drivers
for kvstore, etcd, Redis and a PySyncObj replicated dict (see cli.py, runner.py, compare.py)."""


def main(argv: list[str]) -> int:
    from kvstore.bench.cli import main as _main

    return _main(argv)


__all__ = ["main"]
