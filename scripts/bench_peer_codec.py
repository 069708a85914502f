#!/usr/bin/env python3
"""CPU per raft message of the peer wire: encode + frame + unframe + decode, in-process.

    .venv/bin/python scripts/bench_peer_codec.py [--rounds 5] [--only list|binary]

For each common shape (APP with one ~150-byte entry, APP_RESP, HEARTBEAT, HEARTBEAT_RESP, one
or 16 a frame, and mixed frames of 6 (the mean under scripts/bench_cluster.py's write load) and
16 messages) prints the best-of-rounds ns per message of
  list:   codec.encode_message per message (+ the old transport's item size estimate),
          client.wire.encode_frame, FrameDecoder.feed, codec.decode_message per item
          (the peer wire before the binary batch; still the snapshot hello's form);
  binary: codec.append_message per message, codec.seal, FrameDecoder.feed,
          codec.decode_batch (the peer wire now).
Both sides run the same FrameDecoder the server runs. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from client.wire import FrameDecoder, encode_frame  # noqa: E402
from kvstore import codec  # noqa: E402
from raft.types import Entry, EntryType, Message, MessageType  # noqa: E402

T = MessageType


def shapes() -> dict[str, list[tuple[int, Message]]]:
    app = Message(T.APP, 2, 1, 7, 7, 41_000, (Entry(7, 41_001, EntryType.NORMAL, b"v" * 150),),
                  40_990)
    resp = Message(T.APP_RESP, 1, 2, 7, index=41_001)
    hb = Message(T.HEARTBEAT, 2, 1, 7, commit=40_990, context=b"\0" * 8)
    hbr = Message(T.HEARTBEAT_RESP, 1, 2, 7, context=b"\0" * 8)
    mixed = [app, resp, hb, hbr]
    return {
        "APP 1x150B, 1/frame": [(5, app)],
        "APP_RESP, 1/frame": [(5, resp)],
        "HEARTBEAT, 1/frame": [(5, hb)],
        "HEARTBEAT_RESP, 1/frame": [(5, hbr)],
        "APP 1x150B, 16/frame": [(g, app) for g in range(1, 17)],
        "APP_RESP, 16/frame": [(g, resp) for g in range(1, 17)],
        "mixed, 6/frame": [(g, mixed[g % 4]) for g in range(1, 7)],  # the write bench's mean
        "mixed, 16/frame": [(g, mixed[g % 4]) for g in range(1, 17)],
    }


def _old_item_size(item: list) -> int:  # the transport's per-item estimate before the batch
    ents = item[7]
    return 64 if not ents else 64 + 4 * len(ents) + sum(map(len, ents[3::4]))


_DECODER = FrameDecoder()  # one per connection, as in server.py


def list_round(msgs) -> None:
    items = []
    size = 0
    for g, m in msgs:
        item = codec.encode_message(g, m)
        size += _old_item_size(item)
        items.append(item)
    frame = encode_frame(items)
    for f in _DECODER.feed(frame):
        for item in f:
            codec.decode_message(item)


def binary_round(msgs) -> None:
    buf = codec.new_batch()
    for g, m in msgs:
        codec.append_message(buf, g, m)
    frame = codec.seal(buf, len(msgs))
    for f in _DECODER.feed(bytes(frame)):  # bytes: what the receiver's read returns
        for item in f:
            codec.decode_batch(item)


def ns_per_message(fn, msgs, rounds: int) -> float:
    n = max(1, 20_000 // len(msgs))
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            fn(msgs)
        best = min(best, (time.perf_counter_ns() - t0) / (n * len(msgs)))
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--only", choices=["list", "binary"])
    args = ap.parse_args()
    kinds = [("list", list_round), ("binary", binary_round)]
    if args.only:
        kinds = [k for k in kinds if k[0] == args.only]
    if not hasattr(codec, "append_message"):
        kinds = [k for k in kinds if k[0] == "list"]
    print(f"{'shape':26}" + "".join(f"{k:>14}" for k, _ in kinds) + "   (ns per message, best of rounds)")
    for name, msgs in shapes().items():
        row = [ns_per_message(fn, msgs, args.rounds) for _, fn in kinds]
        print(f"{name:26}" + "".join(f"{v:14.0f}" for v in row))


if __name__ == "__main__":
    main()
