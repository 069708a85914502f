"""The hand-rolled RESP and HTTP/1.1 clients and the PySyncObj front end, over loopback
against small in-process servers (no external store needed)."""

import json
import threading
from functools import partial

import trio

from kvstore.bench.drivers.etcd import EtcdDriver, prefix_end
from kvstore.bench.drivers.redis import RedisDriver
from kvstore.bench.drivers.resp import RespParser, encode_command
from kvstore.bench.pso_node import FrontEnd
from kvstore.bench.runner import LoadConfig, load_records, run_load


def test_resp_parser_handles_split_and_nested_replies():
    p = RespParser()
    data = b"+OK\r\n$5\r\nhello\r\n$-1\r\n:42\r\n*2\r\n$1\r\na\r\n:1\r\n-ERR boom\r\n"
    got = []
    for i in range(len(data)):  # one byte at a time
        p.feed(data[i:i + 1])
        while True:
            ok, reply = p.next_reply()
            if not ok:
                break
            got.append(reply)
    assert got[:5] == [b"OK", b"hello", None, 42, [b"a", 1]]
    assert "boom" in str(got[5])
    assert encode_command(b"SET", b"k", b"v") == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"


class ThreadedStore:
    """Stands in for a PySyncObj ReplDict: commits on another thread, like PySyncObj does."""

    def __init__(self):
        self.data = {}

    def get(self, key, default=None):
        return self.data.get(key, default)

    def set(self, key, value, callback):
        def commit():
            self.data[key] = value
            callback(None, 0)

        threading.Thread(target=commit).start()

    def pop(self, key, default, callback):
        threading.Thread(target=lambda: (self.data.pop(key, None), callback(None, 0))).start()


class FakeSyncObj:
    selfNode = "me"

    def _getLeader(self):
        return "me"


async def _serve_front(nursery, store):
    front = FrontEnd(FakeSyncObj(), store)
    listeners = await nursery.start(partial(trio.serve_tcp, front.serve_connection, 0, host="127.0.0.1"))
    return listeners[0].socket.getsockname()[1]


def test_redis_driver_through_pso_front_end_pipelined():
    store = ThreadedStore()

    async def main():
        async with trio.open_nursery() as nursery:
            port = await _serve_front(nursery, store)
            driver = RedisDriver([f"127.0.0.1:{port}"], connections=2)
            await driver.open(nursery)
            loaded = await load_records(driver, 200, 16, 32)
            assert loaded["ok"] == 200 and not loaded["errors"]
            # many concurrent requests on 2 connections: replies must match their requests
            results = {}

            async def check(i):
                key = b"k%d" % i
                await driver.update(key, b"v%d" % i)
                results[i] = await driver.read(key)

            async with trio.open_nursery() as n2:
                for i in range(100):
                    n2.start_soon(check, i)
            assert all(results[i] == b"v%d" % i for i in range(100))
            cfg = LoadConfig(workload="A", records=200, concurrency=8, duration_s=0.5, warmup_s=0.1, rate=400)
            raw = await run_load(driver, cfg)
            await driver.close()
            nursery.cancel_scope.cancel()
            return raw

    raw = trio.run(main)
    assert not raw["errors"]
    assert sum(o["ok"] for o in raw["ops"].values()) == raw["schedule"]["issued"] > 0
    assert len(store.data) >= 300


async def _fake_etcd(stream, store):
    """Enough of etcd's JSON gateway: put and range (with range_end/limit), keep-alive."""
    import base64

    buf = b""
    while True:
        while b"\r\n\r\n" not in buf:
            data = await stream.receive_some(65536)
            if not data:
                return
            buf += data
        head, buf = buf.split(b"\r\n\r\n", 1)
        path = head.split(b" ")[1]
        length = int([h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")][0].split(b":")[1])
        while len(buf) < length:
            buf += await stream.receive_some(65536)
        body, buf = json.loads(buf[:length]), buf[length:]
        key = base64.b64decode(body["key"])
        if path == b"/v3/kv/put":
            store[key] = base64.b64decode(body["value"])
            reply = {"header": {}}
        else:
            end = base64.b64decode(body["range_end"]) if "range_end" in body else None
            keys = sorted(k for k in store if (k == key if end is None else key <= k < end))
            keys = keys[: body.get("limit") or None]
            reply = {"kvs": [{"key": base64.b64encode(k).decode(), "value": base64.b64encode(store[k]).decode()}
                             for k in keys]}
        out = json.dumps(reply).encode()
        if len(store) % 2:  # exercise both framings
            chunks = b"%x\r\n%s\r\n0\r\n\r\n" % (len(out), out)
            await stream.send_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks)
        else:
            await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(out), out))


def test_etcd_driver_against_fake_gateway():
    store = {}

    async def main():
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, lambda s: _fake_etcd(s, store), 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            driver = EtcdDriver([f"127.0.0.1:{port}"] * 2)
            await driver.open(nursery)
            await driver.update(b"user1", b"a")
            await driver.update(b"user2", b"b")
            await driver.update(b"other", b"c")
            assert await driver.read(b"user1") == b"a"
            assert await driver.read(b"nope") is None
            assert await driver.scan(b"user", 10) == 2
            assert await driver.scan(b"user", 1) == 1
            cfg = LoadConfig(workload="E", records=50, concurrency=4, duration_s=0.5, warmup_s=0.1, rate=200)
            await load_records(driver, 50, 10, 4)
            raw = await run_load(driver, cfg)
            await driver.close()
            nursery.cancel_scope.cancel()
            return raw

    raw = trio.run(main)
    assert not raw["errors"]
    assert raw["ops"]["scan"]["ok"] > 0
    assert prefix_end(b"ab\xff") == b"ac"
