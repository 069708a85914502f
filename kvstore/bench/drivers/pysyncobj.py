"""PySyncObj driver: the replicated dict behind the RESP front end of `kvstore bench pysyncobj-node`."""

from __future__ import annotations

from kvstore.bench.drivers.redis import RedisDriver

DEFAULT_DURABILITY = ("3-node PySyncObj (Raft) ReplDict; a write is acknowledged once committed by a "
                      "majority; file journal is an mmap without fsync (survives a process crash, "
                      "not power loss); reads are local to the node (not linearizable)")


class PySyncObjDriver(RedisDriver):
    """The same GET/SET over pipelined RESP as Redis, against the PySyncObj front end."""

    name = "pysyncobj"
    default_durability = DEFAULT_DURABILITY
