"""Store drivers behind one interface (`base.Driver`), built from a plain dict spec.

spec: {"name": "kvstore" | "etcd" | "redis" | "pysyncobj" | "fake", "endpoints": ["host:port", ...],
       "consistency": "...", plus per-driver options}
"""

from __future__ import annotations

from kvstore.bench.drivers.base import Driver, DriverError, Unsupported

DRIVER_NAMES = ("kvstore", "etcd", "redis", "pysyncobj", "fake")


def make_driver(spec: dict) -> Driver:
    name = spec.get("name")
    endpoints = list(spec.get("endpoints") or [])
    consistency = spec.get("consistency", "linearizable")
    if name == "fake":
        from kvstore.bench.drivers.fake import FakeDriver

        return FakeDriver(latency_s=float(spec.get("latency_s", 0.0)))
    if not endpoints:
        raise ValueError(f"driver {name!r} needs --endpoints host:port[,host:port...]")
    if name == "kvstore":
        from kvstore.bench.drivers.kvstore_driver import KvstoreDriver

        return KvstoreDriver(endpoints, consistency=consistency)
    if name == "etcd":
        from kvstore.bench.drivers.etcd import EtcdDriver

        return EtcdDriver(endpoints, consistency=consistency)
    if name == "redis":
        from kvstore.bench.drivers.redis import RedisDriver

        return RedisDriver(endpoints, connections=int(spec.get("connections", 4)),
                           durability=spec.get("durability"))
    if name == "pysyncobj":
        from kvstore.bench.drivers.pysyncobj import PySyncObjDriver

        return PySyncObjDriver(endpoints, connections=int(spec.get("connections", 4)),
                               durability=spec.get("durability"))
    raise ValueError(f"unknown driver {name!r}; choose one of {', '.join(DRIVER_NAMES)}")


__all__ = ["Driver", "DriverError", "Unsupported", "DRIVER_NAMES", "make_driver"]
