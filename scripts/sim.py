#!/usr/bin/env python3
"""Run seeded schedules of the deterministic Raft cluster simulator (raft/simulation.py).

    .venv/bin/python scripts/sim.py --seeds 1000                 # seeds 0..999, 3 nodes
    .venv/bin/python scripts/sim.py --seeds 200 --start 5000 --nodes 5 --steps 600
    .venv/bin/python scripts/sim.py --seed 1234                  # one seed, print its stats
    .venv/bin/python scripts/sim.py --mutation vote_without_log_check --seeds 500
    .venv/bin/python scripts/sim.py --seeds 200 --fingerprint    # digest of every Ready

`--fingerprint` hashes every Ready every node produces (its repr, in order) and prints one
digest for the whole range: a change meant not to alter behaviour (a refactor, a speed-up)
must print the same digest before and after it.

On a failure it prints the seed, the fault rates drawn for it, the violated invariant and the
last events, and exits 1. With `--mutation NAME` one rule of the core is broken (by
monkeypatching, for this process only) and the run reports how many seeds it took to catch it;
it exits 0 if the simulator caught the mutation and 1 if it did not.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from raft.rawnode import RawNode  # noqa: E402
from raft.simulation import SimulationFailure, run_seed  # noqa: E402
from raft.simulation_mutations import MUTATIONS  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seeds", type=int, default=100, help="how many seeds to run (default 100)")
    p.add_argument("--start", type=int, default=0, help="first seed (default 0)")
    p.add_argument("--seed", type=int, help="run this one seed only")
    p.add_argument("--nodes", type=int, choices=(3, 5), default=3)
    p.add_argument("--steps", type=int, default=300, help="ticks per fault phase (default 300)")
    p.add_argument("--rounds", type=int, default=1,
                   help="fault phase + liveness phase pairs per seed (default 1)")
    p.add_argument("--mutation", choices=sorted(MUTATIONS), help="break one rule of the core")
    p.add_argument("--list-mutations", action="store_true")
    p.add_argument("--keep-going", action="store_true",
                   help="count failures (or, with --mutation, catches) over all the seeds")
    p.add_argument("--trace", type=int, default=200, help="events to print on failure")
    p.add_argument("--fingerprint", action="store_true",
                   help="print a digest of every Ready of the run (same code => same digest)")
    args = p.parse_args(argv)

    if args.list_mutations:
        for name, m in sorted(MUTATIONS.items()):
            print(f"{name:32} {m.description}")
        return 0
    if args.seed is not None:
        args.start, args.seeds = args.seed, 1

    mutation = MUTATIONS[args.mutation] if args.mutation else None
    if mutation is not None:
        print(f"mutation {mutation.name}: {mutation.description}")
        mutation.apply()
    original_ready = RawNode.ready
    digest = _fingerprint_readies() if args.fingerprint else None
    try:
        rc = _run(args, mutation)
    finally:
        if mutation is not None:
            mutation.undo()
        RawNode.ready = original_ready  # type: ignore[method-assign]
    if digest is not None:
        print(f"fingerprint of seeds {args.start}..{args.start + args.seeds - 1}: "
              f"{digest.hexdigest()}")
    return rc


def _fingerprint_readies():
    """Wrap RawNode.ready (for this process) so that every Ready is fed to a hash."""
    digest = hashlib.sha256()
    original = RawNode.ready

    def ready(self: RawNode):
        rd = original(self)
        digest.update(repr((self.id, rd.soft_state, rd.hard_state, rd.entries, rd.snapshot,
                            rd.committed_entries, rd.messages, rd.persisted_messages,
                            rd.read_states, rd.must_sync)).encode())
        return rd

    RawNode.ready = ready  # type: ignore[method-assign]
    return digest


def _run(args: argparse.Namespace, mutation) -> int:
    t0 = last = time.monotonic()
    failures: list[SimulationFailure] = []
    ticks = 0
    done = 0
    for seed in range(args.start, args.start + args.seeds):
        try:
            res = run_seed(seed, nodes=args.nodes, steps=args.steps, rounds=args.rounds)
            ticks += res.ticks
            if args.seeds == 1:
                print(f"seed {seed}: {res.ticks} ticks; rates: {res.rates.describe()}")
                print("  " + ", ".join(f"{k}={v}" for k, v in sorted(res.stats.items())))
        except SimulationFailure as f:
            failures.append(f)
            done += 1
            if mutation is not None:
                if len(failures) == 1:
                    print(f"mutation {mutation.name} caught by seed {seed} after {done} "
                          f"seed(s): {f.invariant}")
                    print(f.report(args.trace) if args.seeds == 1 else f"  {f.error}")
                if not args.keep_going:
                    return 0
                continue
            print(f.report(args.trace))
            if not args.keep_going:
                return 1
            continue
        done += 1
        now = time.monotonic()
        if now - last >= 2.0 or done == args.seeds:
            last = now
            rate = done / (now - t0)
            print(f"seeds {args.start}..{seed} ({done}/{args.seeds}): {rate:.1f} seeds/s, "
                  f"{ticks / (now - t0):.0f} ticks/s, failures {len(failures)}", flush=True)
    if mutation is not None:
        if not failures:
            print(f"mutation {mutation.name} NOT caught in {done} seeds")
            return 1
        kinds = collections.Counter(f.invariant for f in failures)
        print(f"mutation {mutation.name} caught by {len(failures)} of {done} seeds "
              f"({', '.join(f'{k}: {v}' for k, v in kinds.most_common())})")
        return 0
    if failures:
        print(f"{len(failures)} failing seeds: {[f.seed for f in failures]}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
