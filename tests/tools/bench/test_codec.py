"""The codec bench measures the real encode path and counts every header (numbers not asserted)."""

from __future__ import annotations

import json

from edge_client.transfer import chunk_overhead
from tools.bench import codec as bench


def test_codec_bench_counts_every_header() -> None:
    shapes = {"dense0_kernel": (784, 32), "dense0_bias": (32,),
              "dense1_kernel": (32, 10), "dense1_bias": (10,)}
    result = bench.run(quick=True, cases=[("local mlp", shapes)])
    assert json.loads(json.dumps(result)) == result
    (row,) = result["rows"]
    sizes = {codec: c["wire_bytes"] for codec, c in row["codecs"].items()}
    assert row["params"] == 25_450
    assert sizes["fp32"] > 4 * row["params"] + chunk_overhead("u-1-0001")
    assert sizes["int8"] > row["params"] + 4 * 42  # data + one scale per output channel
    assert sizes["int8"] < sizes["fp16"] < sizes["fp32"]
    assert row["codecs"]["fp32"]["ratio"] == 1.0
    text = bench.render(result)
    assert "| local mlp | 25,450 | int8 |" in text and "Goal" in text
