"""The data bench loads one generated CSV with fedge and its peers (numbers not asserted)."""

from __future__ import annotations

from tools.bench import data as bench


def test_data_bench_measures_each_loader_on_the_same_table() -> None:
    result = bench.run(quick=True)
    assert set(result["loaders"]) == {"fedge (edge_client.data)", "numpy.loadtxt (float32)",
                                      "pandas.read_csv (float32)"}
    ours = result["loaders"]["fedge (edge_client.data)"]
    assert ours["bytes"] == result["rows"] * (4 * 4 + 8)  # float32 features + int64 labels
    assert ours["growth_kb"] >= 0 and ours["seconds"] > 0  # small: may stay under the import peak
    assert "| fedge (edge_client.data) |" in bench.render(result)
