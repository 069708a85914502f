"""Jepsen-style fault injection for kvstore: hosts, nemeses, generator, workloads, checkers.

Run with `jepsen-style/run.py`; see README.md ("Fault injection").
"""
