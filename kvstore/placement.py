"""The initial bucket map: which nodes hold a replica of each bucket, derived deterministically.

Every node computes the same map from the same flags, so a fresh cluster needs no coordination
to start. Replica slots are dealt round-robin over the nodes in id order (bucket `b` gets slots
`b*r .. b*r+r-1`), so every node holds the same number of replicas (± 1) and a bucket's replicas
are distinct. The first replica of a bucket is its preferred leader (it campaigns first on a new
cluster); it is chosen greedily among the bucket's replicas so that leaders spread evenly too.
The meta group, which replicates the map itself, lives on the first min(5, n) nodes.

Raft group ids: the meta group is group 0 and bucket `b` is group `b + 1`.
"""

from __future__ import annotations

from dataclasses import dataclass

META_GROUP = 0
META_REPLICAS_MAX = 5


def group_of_bucket(bucket: int) -> int:
    return bucket + 1


def bucket_of_group(group: int) -> int:
    return group - 1


@dataclass(slots=True)
class BucketMap:
    epoch: int
    num_buckets: int
    nodes: dict[int, str]  # node id -> "host:port"
    replicas: list[tuple[int, ...]]  # per bucket
    epochs: list[int]  # per bucket
    meta_replicas: tuple[int, ...]

    def to_record(self) -> dict:
        return {
            "epoch": self.epoch,
            "num_buckets": self.num_buckets,
            "nodes": {int(k): v for k, v in self.nodes.items()},
            "replicas": [list(r) for r in self.replicas],
            "epochs": list(self.epochs),
            "meta_replicas": list(self.meta_replicas),
        }

    @classmethod
    def from_record(cls, rec: dict) -> "BucketMap":
        return cls(
            epoch=int(rec["epoch"]),
            num_buckets=int(rec["num_buckets"]),
            nodes={int(k): str(v) for k, v in rec["nodes"].items()},
            replicas=[tuple(int(x) for x in r) for r in rec["replicas"]],
            epochs=[int(e) for e in rec["epochs"]],
            meta_replicas=tuple(int(x) for x in rec["meta_replicas"]),
        )

    def groups_of(self, node_id: int) -> dict[int, tuple[int, ...]]:
        """Raft group id -> voters, for every group that has a replica on `node_id`."""
        out = {}
        if node_id in self.meta_replicas:
            out[META_GROUP] = self.meta_replicas
        for b, reps in enumerate(self.replicas):
            if node_id in reps:
                out[group_of_bucket(b)] = reps
        return out


def initial_map(nodes: dict[int, str], num_buckets: int, replication: int) -> BucketMap:
    if not nodes:
        raise ValueError("the cluster needs at least one node")
    if num_buckets < 1:
        raise ValueError("--buckets must be at least 1")
    if replication < 1:
        raise ValueError("--replication must be at least 1")
    ids = sorted(nodes)
    n = len(ids)
    r = min(replication, n)
    replicas = []
    firsts = dict.fromkeys(ids, 0)
    for b in range(num_buckets):
        window = [ids[(b * r + k) % n] for k in range(r)]
        first = min(window, key=lambda i: (firsts[i], (ids.index(i) - b) % n))
        firsts[first] += 1
        window.remove(first)
        replicas.append((first, *window))
    return BucketMap(
        epoch=1,
        num_buckets=num_buckets,
        nodes=dict(nodes),
        replicas=replicas,
        epochs=[1] * num_buckets,
        meta_replicas=tuple(ids[: min(META_REPLICAS_MAX, n)]),
    )


def parse_cluster(spec: str) -> dict[int, str]:
    """'1=127.0.0.1:7001,2=host:7002' -> {1: '127.0.0.1:7001', 2: 'host:7002'}."""
    nodes: dict[int, str] = {}
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        ident, sep, addr = part.partition("=")
        if not sep:
            raise ValueError(f"cluster entry {part!r} must look like ID=HOST:PORT")
        try:
            node_id = int(ident)
        except ValueError:
            raise ValueError(f"node id {ident!r} in --cluster must be a positive int") from None
        if node_id <= 0:
            raise ValueError(f"node id {node_id} in --cluster must be positive")
        if node_id in nodes:
            raise ValueError(f"node id {node_id} appears twice in --cluster")
        split_addr(addr)
        nodes[node_id] = addr.strip()
    if not nodes:
        raise ValueError("--cluster lists no nodes")
    return nodes


def split_addr(addr: str) -> tuple[str, int]:
    host, sep, port = addr.strip().rpartition(":")
    if not sep or not host:
        raise ValueError(f"address {addr!r} must look like HOST:PORT")
    try:
        p = int(port)
    except ValueError:
        raise ValueError(f"port in {addr!r} must be an int") from None
    if not 0 < p < 65536:
        raise ValueError(f"port in {addr!r} is out of range")
    return host, p
