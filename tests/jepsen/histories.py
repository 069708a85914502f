"""Helpers to write histories by hand in tests: h(("p1", "invoke", "write", "x", 1), ...)."""

from jepsen.history import Event


def h(*rows):
    out = []
    for i, row in enumerate(rows):
        process, type_, f, key, value = row
        out.append(Event(process=process, type=type_, f=f, key=key, value=value, time=i * 10, index=i))
    return out
