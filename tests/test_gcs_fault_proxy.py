"""scripts/gcs_fault_proxy.py: its faults are seeded and each kind reaches a client; and through
its request log, what storage.py sends to a bucket (ranged reads of exactly the bytes asked for,
a completion marker uploaded last)."""

from __future__ import annotations

import collections
import http.client
import json
import time
import urllib.parse

import numpy as np
import pytest

from scripts import gcs_fault_proxy
from scripts.gcs_fault_proxy import Faults, Latency

from jointist_jax import storage


def _faults_of(proxy, n, method="GET"):
    return [proxy._decide(method)[1] for _ in range(n)]


def test_faults_are_seeded_by_request_order_and_bounded():
    rates = dict(error_503=0.05, error_429=0.05, drop=0.05, delay=0.05)
    a = gcs_fault_proxy.FaultProxy("http://127.0.0.1:1", Faults(seed=4, **rates))
    b = gcs_fault_proxy.FaultProxy("http://127.0.0.1:1", Faults(seed=4, **rates))
    other = gcs_fault_proxy.FaultProxy("http://127.0.0.1:1", Faults(seed=5, **rates))
    sequence = _faults_of(a, 2000)
    assert sequence == _faults_of(b, 2000)
    assert sequence != _faults_of(other, 2000)
    counts = collections.Counter(sequence)
    assert dict(a.counts) == {k: counts[k] for k in gcs_fault_proxy.KINDS}
    for kind in gcs_fault_proxy.KINDS:  # 100 expected of each; 5 standard deviations is about 50
        assert 50 < counts[kind] < 150, counts
    # Writes are never cut after forwarding; faults switched off inject nothing; a bound holds.
    assert "drop" not in _faults_of(gcs_fault_proxy.FaultProxy("http://127.0.0.1:1", Faults(drop=1.0)), 50, "POST")
    off = gcs_fault_proxy.FaultProxy("http://127.0.0.1:1", Faults(error_503=1.0))
    off.faults_on = False
    assert _faults_of(off, 50) == [None] * 50
    bounded = gcs_fault_proxy.FaultProxy("http://127.0.0.1:1", Faults(error_429=1.0, max_per_kind=3))
    assert _faults_of(bounded, 10) == ["429"] * 3 + [None] * 7


def _get(proxy, path, headers=None):
    split = urllib.parse.urlsplit(proxy.url)
    connection = http.client.HTTPConnection(split.hostname, split.port, timeout=30)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_each_fault_kind_reaches_a_client_and_latency_holds(gcs):
    bucket = gcs.new_bucket()
    storage.path(f"gs://{bucket}/x.bin").write_bytes(bytes(range(200)))
    path = f"/download/storage/v1/b/{bucket}/o/x.bin?alt=media"
    with gcs_fault_proxy.running(gcs.url) as proxy:
        for code in (503, 429):
            proxy.faults = Faults(**{f"error_{code}": 1.0})
            status, body = _get(proxy, path)
            assert status == code and json.loads(body)["error"]["code"] == code
        proxy.faults = Faults(drop=1.0)
        with pytest.raises(http.client.IncompleteRead) as cut:
            _get(proxy, path)
        assert len(cut.value.partial) == 100
        proxy.faults = Faults(delay=1.0, delay_s=0.3)
        start = time.monotonic()
        assert _get(proxy, path) == (200, bytes(range(200)))
        assert time.monotonic() - start >= 0.3
        proxy.faults, proxy.latency = Faults(), Latency(first_byte_s=0.05)
        start = time.monotonic()
        assert _get(proxy, path, {"Range": "bytes=10-19"}) == (206, bytes(range(10, 20)))
        assert time.monotonic() - start >= 0.05
        assert [e.fault for e in proxy.requests()] == ["503", "429", "drop", "delay", None]
        assert proxy.requests()[-1].range == "bytes=10-19" and proxy.requests()[-1].bytes_sent == 10


def test_gcsfs_and_tensorstore_survive_each_kind(gcs):
    """gcsfs (every storage.py access) and TensorStore (orbax's arrays) retry every kind of fault."""
    import tensorstore as ts

    bucket = gcs.new_bucket()
    data = bytes(range(256)) * 4
    storage.path(f"gs://{bucket}/x.bin").write_bytes(data)
    one_each = Faults(seed=1, error_503=0.25, error_429=0.25, drop=0.25, delay=0.25, delay_s=0.2, max_per_kind=1)
    with gcs_fault_proxy.running(gcs.url, one_each) as proxy:
        with storage.RangeReader([f"gs://{bucket}/x.bin"]) as reader:
            assert reader.read_many([(0, 100 * i, 100) for i in range(8)]) == [data[100 * i:100 * i + 100]
                                                                                for i in range(8)]
        assert dict(proxy.counts) == {"503": 1, "429": 1, "drop": 1, "delay": 1}
        proxy.counts.clear()
        array = ts.open({"driver": "zarr", "kvstore": f"gs://{bucket}/array"}, create=True, dtype=ts.float32,
                        shape=[64], chunk_layout=ts.ChunkLayout(chunk_shape=[8])).result()
        array.write(np.arange(64, dtype=np.float32)).result()
        np.testing.assert_array_equal(array.read().result(), np.arange(64, dtype=np.float32))
        assert dict(proxy.counts) == {"503": 1, "429": 1, "drop": 1, "delay": 1}


def test_bucket_reads_fetch_only_the_bytes_asked_for(gcs):
    """RangeReader.read and read_many send one range request per span, of exactly that span."""
    bucket = gcs.new_bucket()
    data = bytes(range(256)) * 40
    storage.path(f"gs://{bucket}/x.bin").write_bytes(data)
    spans = [(0, 1000, 30), (0, 5000, 16), (0, 7, 1)]
    with gcs_fault_proxy.running(gcs.url) as proxy, storage.RangeReader([f"gs://{bucket}/x.bin"]) as reader:
        assert reader.read(0, 300, 40) == data[300:340]
        assert reader.read_many(spans) == [data[o:o + n] for _, o, n in spans]
        gets = [e for e in proxy.requests() if e.method == "GET" and e.object == f"{bucket}/x.bin"]
    assert [e.range for e in gets[:1]] == ["bytes=300-339"]
    assert sorted(e.range for e in gets[1:]) == sorted(f"bytes={o}-{o + n - 1}" for _, o, n in spans)
    assert [e.bytes_sent for e in gets[:1]] == [40] and sum(e.bytes_sent for e in gets) == 40 + 30 + 16 + 1


def test_upload_tree_uploads_the_marker_after_everything_else(gcs, tmp_path):
    bucket = gcs.new_bucket()
    local = tmp_path / "tree"
    for i in range(24):
        (local / f"part{i % 3}").mkdir(parents=True, exist_ok=True)
        (local / f"part{i % 3}" / f"{i}.bin").write_bytes(bytes([i]) * 100)
    (local / "0_done.json").write_text("{}")  # sorts first: an upload in name order would send it first
    # Some latency, so that uploads in flight together overlap.
    with gcs_fault_proxy.running(gcs.url, latency=Latency(first_byte_s=0.02)) as proxy:
        storage.upload_tree(local, f"gs://{bucket}/tree", last=["0_done.json"])
        done = gcs_fault_proxy.upload_completions(proxy.requests(), f"{bucket}/tree/")
    assert len(done) == 25
    marker = done.pop(f"{bucket}/tree/0_done.json")
    assert marker > max(done.values())
