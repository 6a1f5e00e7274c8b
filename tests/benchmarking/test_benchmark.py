"""`fusionmamba benchmark` smoke tests on CPU: fields present and sane, JSON parses. No timing assertions."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from typer.testing import CliRunner

from fusionmamba_cli import benchmarking
from fusionmamba_cli.cli.app import app
from fusionmamba_cli.model import create_model
from fusionmamba_cli.model.ssm import ScanCore2D

runner = CliRunner()

ROW_FIELDS = (
    "model", "params", "device", "dtype", "scan_backend", "batch", "height", "width", "pixels", "padded_pixels",
    "gflops", "counted_gflops", "scan_gflops", "scan_share", "latency_ms", "latency_p25_ms", "latency_p75_ms",
    "latency_min_ms", "latency_max_ms", "throughput_pairs_s", "peak_memory_mb", "memory_kind", "cuda_graphs",
    "compiled",
)  # fmt: skip


@pytest.fixture(autouse=True)
def _no_forced_backend(monkeypatch):
    monkeypatch.delenv("FUSIONMAMBA_SCAN_BACKEND", raising=False)


def test_run_benchmark_rows_are_complete_and_sane():
    model, label = benchmarking.build_model(preset="micro", device="cpu")
    rows = benchmarking.run_benchmark(model, [32, 64], warmup=1, repeat=2, label=label)
    assert [(r["height"], r["width"]) for r in rows] == [(32, 32), (64, 64)]
    for row in rows:
        assert not set(ROW_FIELDS) - set(row), set(ROW_FIELDS) - set(row)
        assert row["model"] == "micro" and row["device"] == "cpu" and row["dtype"] == "fp32"
        assert row["params"] == sum(p.numel() for p in model.parameters()) > 0
        assert row["gflops"] > row["scan_gflops"] > 0
        assert math.isclose(row["gflops"], row["counted_gflops"] + row["scan_gflops"])
        assert row["latency_ms"] > 0 and row["throughput_pairs_s"] > 0
        assert row["latency_min_ms"] <= row["latency_ms"] <= row["latency_max_ms"]
        assert row["peak_memory_mb"] > 0 and row["memory_kind"] in ("rss_sampled", "ru_maxrss")
        assert len(row["times_ms"]) == 2
        assert row["cuda_graphs"] is False  # graphs only ever apply to CUDA tensors
    report = benchmarking.benchmark_report(rows)
    assert json.loads(json.dumps(report))["exponents"]["gflops"] == pytest.approx(1.0, abs=0.02)


def test_flops_scale_with_pixels_and_batch_and_count_every_scan():
    model = create_model("micro")
    one = benchmarking.count_flops(model, 32, batch=1)
    assert benchmarking.count_flops(model, 64)["scan_gflops"] == pytest.approx(4 * one["scan_gflops"])
    assert benchmarking.count_flops(model, 32, batch=2)["gflops"] == pytest.approx(2 * one["gflops"])
    # the model's weights are untouched by the meta-device counting and the scan wrappers are gone
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert all("scan" not in vars(m) for m in model.modules() if isinstance(m, ScanCore2D))
    # one ScanCore2D call at the top level of a 32x32 micro input: 8x8 tokens -> L = 4*4
    assert benchmarking.scan_flops(1, 4 * 16, 4, 16) == 9 * 64 * 4 * 16 + 64 * 16
    assert one["scan_calls"] > 0


@pytest.mark.parametrize("backend", ["reference", "torch", "numba"])
def test_counted_part_excludes_the_scan_whatever_the_backend(backend):
    """The counted part equals FlopCounterMode on a real forward with the element-wise reference scan,
    even when a backend computes part of the scan with einsum (no double counting)."""
    model = create_model("micro").eval()
    model.set_scan_backend("reference")
    x = torch.rand(1, 1, 32, 32)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x, x)
    model.set_scan_backend(backend)
    assert benchmarking.count_flops(model, 32)["counted_gflops"] == pytest.approx(counter.get_total_flops() / 1e9)


def test_fit_exponent_on_synthetic_data():
    pixels = [256**2, 512**2, 1024**2, 2048**2]
    assert benchmarking.fit_exponent(pixels, [float(p) for p in pixels]) == pytest.approx(1.0)
    assert benchmarking.fit_exponent(pixels, [3.0 * p**1.5 for p in pixels]) == pytest.approx(1.5)
    assert benchmarking.fit_exponent([100], [1.0]) is None


def test_bf16_on_cpu():
    model, _ = benchmarking.build_model(preset="micro", device="cpu", dtype="bf16")
    (row,) = benchmarking.run_benchmark(model, [32], warmup=1, repeat=1)
    assert row["dtype"] == "bf16" and row["latency_ms"] > 0


def test_cli_json_is_one_object_on_stdout():
    result = runner.invoke(
        app, ["benchmark", "--preset", "micro", "--size", "32", "--size", "40x48", "--warmup", "1", "--repeat", "2", "--device", "cpu", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["model"] == "micro" and report["params"] > 0
    assert [(r["height"], r["width"]) for r in report["rows"]] == [(32, 32), (40, 48)]
    assert report["rows"][1]["padded_pixels"] == 40 * 48  # multiples of micro's 8
    assert all(r["gflops"] > 0 and r["scan_gflops"] > 0 and r["latency_ms"] > 0 for r in report["rows"])
    assert report["exponents"]["gflops"] is not None
    assert any("FlopCounterMode" in note for note in report["notes"])


def test_cli_compile_rows_say_so(monkeypatch):
    # Dynamo with its "eager" backend: the --compile plumbing without minutes of code generation.
    monkeypatch.setattr("fusionmamba_cli.model.compiled.DEVICE_TYPES", ("cuda", "cpu"))  # CPU-only CI
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: real_compile(model, backend="eager", dynamic=False))
    result = runner.invoke(
        app, ["benchmark", "--preset", "micro", "--size", "32", "--warmup", "1", "--repeat", "1", "--device", "cpu", "--compile", "--json"]
    )
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)["rows"]
    assert row["compiled"] is True and row["compile_s"] > 0
    plain = runner.invoke(app, ["benchmark", "--preset", "micro", "--size", "32", "--warmup", "1", "--repeat", "1", "--device", "cpu", "--json"])
    assert json.loads(plain.stdout)["rows"][0]["compiled"] is False


def test_cli_table_flops_only_and_usage_errors():
    result = runner.invoke(app, ["benchmark", "--preset", "micro", "--size", "64", "--size", "128", "--flops-only"])
    assert result.exit_code == 0, result.output
    assert "GFLOPs" in result.stdout and "fitted exponent" in result.stdout and "scan" in result.stdout
    bad = runner.invoke(app, ["benchmark", "--preset", "micro", "--size", "big"])
    assert bad.exit_code != 0
    both = runner.invoke(app, ["benchmark", "--preset", "micro", "--weights", "x.safetensors"])
    assert both.exit_code != 0


def test_weights_file(micro_weights):
    model, label = benchmarking.build_model(weights=str(micro_weights))
    (row,) = benchmarking.run_benchmark(model, [32], time_it=False, label=label)
    assert row["params"] > 0 and row["gflops"] > 0 and "latency_ms" not in row
