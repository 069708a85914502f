"""The client's cached bucket map: which nodes hold a bucket and which of them leads it.

Pure data, no I/O. Built from the payload of the "map" op (see client/wire.py); leader hints
from NOT_LEADER replies update it in place between refreshes. Node ids are opaque (whatever
the node sends); connections are keyed by address ("host:port").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Hashable

from client.wire import bucket_of


class MapError(ValueError):
    """A "map" reply that does not have the documented shape."""


@dataclass(slots=True)
class BucketInfo:
    epoch: int
    replicas: list[Hashable]
    leader: Hashable | None


@dataclass(slots=True)
class BucketMap:
    epoch: int
    num_buckets: int
    nodes: dict[Hashable, str]
    buckets: list[BucketInfo]

    @classmethod
    def from_wire(cls, payload: Any) -> "BucketMap":
        try:
            epoch = int(payload["epoch"])
            num_buckets = int(payload["num_buckets"])
            nodes = {nid: str(addr) for nid, addr in dict(payload["nodes"]).items()}
            buckets = []
            for entry in payload["buckets"]:
                b_epoch, replicas, leader = entry
                buckets.append(BucketInfo(int(b_epoch), list(replicas), leader))
        except (KeyError, TypeError, ValueError) as exc:
            raise MapError(f"malformed bucket map: {exc!r}") from None
        if num_buckets <= 0 or len(buckets) != num_buckets:
            raise MapError(f"bucket map has {len(buckets)} entries for num_buckets={num_buckets}")
        return cls(epoch, num_buckets, nodes, buckets)

    def bucket_of(self, key: bytes) -> int:
        return bucket_of(key, self.num_buckets)

    def addr(self, node_id: Hashable | None) -> str | None:
        return None if node_id is None else self.nodes.get(node_id)

    def leader_addr(self, bucket: int) -> str | None:
        return self.addr(self.buckets[bucket].leader)

    def replica_addrs(self, bucket: int) -> list[str]:
        return [a for a in (self.addr(n) for n in self.buckets[bucket].replicas) if a is not None]

    def node_id_of(self, addr: str) -> Hashable | None:
        for nid, a in self.nodes.items():
            if a == addr:
                return nid
        return None

    def note_leader(self, bucket: int, leader: Hashable | None, leader_addr: str | None) -> None:
        """Record a NOT_LEADER hint (leader None: the replica knows no leader right now)."""
        if leader is not None and leader_addr and leader not in self.nodes:
            self.nodes[leader] = leader_addr
        self.buckets[bucket].leader = leader if (leader is None or leader in self.nodes) else None

    def forget_leader(self, bucket: int, addr: str) -> None:
        """The node at `addr` failed us as leader of `bucket`: stop assuming it leads."""
        info = self.buckets[bucket]
        if info.leader is not None and self.nodes.get(info.leader) == addr:
            info.leader = None

    def all_addrs(self) -> list[str]:
        return sorted(set(self.nodes.values()))

    def to_dict(self) -> dict:
        """A plain copy for callers (bucket_map())."""
        return {
            "epoch": self.epoch,
            "num_buckets": self.num_buckets,
            "nodes": dict(self.nodes),
            "buckets": [[b.epoch, list(b.replicas), b.leader] for b in self.buckets],
        }
