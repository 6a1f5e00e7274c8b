"""The chunk-parallel Triton backward (`_TUNING["bwd_impl"] = "chunked"`) against the sequential
reference (forward and all seven gradients) and against the serial Triton backward.

Without a GPU the kernels run through Triton's interpreter on CPU tensors (tests/conftest.py sets
TRITON_INTERPRET=1 before triton is imported). Small chunks give many tiles cheaply.
"""

import os

import torch  # importing torch does not import triton

_CUDA = torch.cuda.is_available()
if not _CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import importlib  # noqa: E402

import pytest  # noqa: E402

triton = pytest.importorskip("triton", reason="triton is not installed; the Triton scan backend cannot run")

from fusionmamba_cli.ops import scan_triton as st  # noqa: E402
from fusionmamba_cli.ops.scan_reference import selective_scan_ref  # noqa: E402

if not _CUDA and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
    pytest.skip("no CUDA and TRITON_INTERPRET is disabled: nothing can run the Triton kernels",
                allow_module_level=True)
if not _CUDA and not isinstance(st._scan_fwd_kernel, triton.runtime.interpreter.InterpretedFunction):
    st = importlib.reload(st)  # imported earlier without the interpreter: redefine the kernels

DEVICE = "cuda" if _CUDA else "cpu"
NAMES = ("u", "delta", "A", "B", "C", "D", "delta_bias")


@pytest.fixture(autouse=True)
def chunked(monkeypatch):
    """Every test here runs the chunked backward unless it sets the implementation itself."""
    monkeypatch.delenv(st._BWD_ENV, raising=False)
    monkeypatch.setitem(st._TUNING, "bwd_impl", "chunked")


def make_inputs(batch=2, groups=2, per_group=2, n_state=16, length=37, *, dt_scale=0.5, a_max=5.0,
                delta_shift=0.0, with_d=True, with_bias=True, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    channels = groups * per_group

    def rnd(*shape):
        return torch.randn(*shape, generator=gen)

    out = {
        "u": rnd(batch, channels, length).to(dtype),
        "delta": (rnd(batch, channels, length) * dt_scale + delta_shift).to(dtype),
        "A": -(torch.rand(channels, n_state, generator=gen) * (a_max - 0.1) + 0.1),
        "B": rnd(batch, groups, n_state, length).to(dtype),
        "C": rnd(batch, groups, n_state, length).to(dtype),
        "D": rnd(channels) if with_d else None,
        "delta_bias": rnd(channels) * 0.3 if with_bias else None,
    }
    return {k: (None if v is None else v.to(DEVICE)) for k, v in out.items()}


def assert_close(actual, expected, name, rtol, atol_rel):
    """|a - e| <= rtol*|e| + atol_rel*max|e| elementwise (scale-aware absolute floor)."""
    actual, expected = actual.detach().double().cpu(), expected.detach().double().cpu()
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert torch.isfinite(actual).all(), f"{name}: non-finite values"
    scale = expected.abs().max().item() or 1.0
    err = (actual - expected).abs()
    worst = (err - (rtol * expected.abs() + atol_rel * scale)).max().item()
    assert worst <= 0, f"{name}: max abs err {err.max().item():.3e} (scale {scale:.3e}) exceeds tolerance"


def triton_grads(inputs, *, softplus=True, chunk=8, block_d=None):
    leaves = {k: (None if v is None else v.detach().clone().requires_grad_(True)) for k, v in inputs.items()}
    y = st.selective_scan_triton(leaves["u"], leaves["delta"], leaves["A"], leaves["B"], leaves["C"],
                                 leaves["D"], leaves["delta_bias"], softplus, chunk=chunk, block_d=block_d)
    names = [k for k in NAMES if leaves[k] is not None]
    gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(123)).to(DEVICE, y.dtype)
    got = torch.autograd.grad(y, [leaves[k] for k in names], gy)
    for name, g in zip(names, got):
        assert g.dtype == leaves[name].dtype, f"d{name}: dtype {g.dtype} != {leaves[name].dtype}"
    return y, dict(zip(names, got))


def ref_grads(inputs, softplus=True):
    """The oracle in fp64 (inputs upcast), far more accurate than what it judges."""
    args = {k: (None if v is None else v.detach().double().requires_grad_(True)) for k, v in inputs.items()}
    y = selective_scan_ref(args["u"], args["delta"], args["A"], args["B"], args["C"], args["D"],
                           args["delta_bias"], softplus)
    names = [k for k in NAMES if args[k] is not None]
    gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(123)).to(DEVICE).double()
    return y, dict(zip(names, torch.autograd.grad(y, [args[k] for k in names], gy)))


def check(inputs, *, softplus=True, chunk=8, block_d=None, rtol=1e-4, atol_rel=1e-5):
    y, got = triton_grads(inputs, softplus=softplus, chunk=chunk, block_d=block_d)
    y_ref, want = ref_grads(inputs, softplus)
    assert y.dtype == inputs["u"].dtype
    assert_close(y, y_ref, "y", rtol, atol_rel)
    assert set(got) == set(want)
    for name in want:
        assert_close(got[name], want[name], f"d{name}", rtol, atol_rel)
    return got


def test_ragged_length_several_chunks():
    # L = 37 with chunk 8: four full tiles and a ragged one of 5; batch 2, K = 2 groups, BLOCK_D 2
    check(make_inputs(length=37), chunk=8, block_d=2)


def test_single_step():
    check(make_inputs(length=1, per_group=1), chunk=8)


def test_exactly_one_chunk():
    check(make_inputs(length=16, per_group=1, seed=1), chunk=16)


def test_many_chunks_odd_state_no_d_no_bias():
    # 13 tiles of 8 (the last one 4 long), N = 5 (masked up to 8), no D, no delta_bias
    check(make_inputs(length=100, groups=2, per_group=1, n_state=5, with_d=False, with_bias=False, seed=2),
          chunk=8, block_d=1)


def test_carry_over_several_tile_blocks(monkeypatch):
    # the carry pass solves the recurrence over blocks of tiles; 4 tiles per block here, so the
    # 11 tiles of 4 steps need three blocks, the last one partial
    monkeypatch.setitem(st._TUNING, "chunked_carry_tiles", 4)
    check(make_inputs(batch=1, length=43, per_group=1, n_state=6, seed=3), chunk=4)


def test_large_steps_and_strong_decay():
    # delta ~ 10 after the softplus, A down to -50: exp(dt*A) underflows to 0 within one step
    check(make_inputs(length=30, delta_shift=8.0, dt_scale=2.0, a_max=50.0, seed=4), chunk=8)


def test_without_softplus():
    inputs = make_inputs(length=21, per_group=1, seed=5)
    inputs["delta"] = inputs["delta"].abs() * 0.3
    check(inputs, softplus=False, chunk=8)


@pytest.mark.parametrize("knob", [{"chunked_reverse": "scratch"}, {"deterministic": False},
                                  {"bwd_vec": False}])
def test_kernel_variants(knob, monkeypatch):
    # the adjoint reversed through a scratch buffer instead of tl.flip, atomic dB/dC, and B/C row
    # strides hidden from the compiler
    for key, value in knob.items():
        monkeypatch.setitem(st._TUNING, key, value)
    check(make_inputs(length=19, seed=6), chunk=8, block_d=1)


def test_half_precision_inputs():
    check(make_inputs(length=20, per_group=1, dtype=torch.float16, seed=7), chunk=8, rtol=5e-3, atol_rel=2e-3)


def test_matches_serial_backward(monkeypatch):
    # batch 2, K = 2, 6 tiles (the last ragged), N = 16 and N = 7: same forward, same gradients
    for n_state in (16, 7):
        inputs = make_inputs(length=45, n_state=n_state, seed=8)
        y_c, chunked = triton_grads(inputs, chunk=8)
        monkeypatch.setitem(st._TUNING, "bwd_impl", "serial")
        y_s, serial = triton_grads(inputs, chunk=8)
        monkeypatch.setitem(st._TUNING, "bwd_impl", "chunked")
        assert torch.equal(y_c, y_s)
        assert set(chunked) == set(NAMES)
        for name in NAMES:
            assert_close(chunked[name], serial[name], f"d{name}", 1e-6, 1e-6)


def test_environment_overrides_tuning(monkeypatch):
    monkeypatch.setitem(st._TUNING, "bwd_impl", "serial")
    assert st._bwd_impl() == "serial"
    monkeypatch.setenv(st._BWD_ENV, "chunked")
    assert st._bwd_impl() == "chunked"
    monkeypatch.setitem(st._TUNING, "bwd_impl", "chunked")
    monkeypatch.setenv(st._BWD_ENV, "Serial")
    assert st._bwd_impl() == "serial"
    monkeypatch.setenv(st._BWD_ENV, "")  # empty: not set
    assert st._bwd_impl() == "chunked"
    monkeypatch.setenv(st._BWD_ENV, "parallel")
    inputs = make_inputs(batch=1, length=4, per_group=1, n_state=4, seed=9)
    u = inputs["u"].clone().requires_grad_(True)
    y = st.selective_scan_triton(u, inputs["delta"], inputs["A"], inputs["B"], inputs["C"], chunk=4)
    with pytest.raises(ValueError, match="parallel"):
        y.sum().backward()


def test_environment_selects_chunked_kernels(monkeypatch):
    # with the tuning on "serial", the variable alone routes the backward to the chunked kernels
    monkeypatch.setitem(st._TUNING, "bwd_impl", "serial")
    monkeypatch.setenv(st._BWD_ENV, "chunked")
    launched = []
    real = st._bwd_chunk_grad_kernel

    class Spy:
        def __getitem__(self, grid):
            launched.append(grid)
            return real[grid]

    monkeypatch.setattr(st, "_bwd_chunk_grad_kernel", Spy())
    check(make_inputs(batch=1, length=12, per_group=1, n_state=4, seed=10), chunk=4)
    assert launched == [(3, 2, 1)]  # (tiles, channel blocks, batch)


def test_choose_block_d_counts_tiles():
    dev = torch.device("cpu")  # 132 SMs assumed without CUDA
    serial = st._choose_block_d(1, 256, 64, 16, 16384, dev)
    chunked = st._choose_block_d(1, 256, 64, 16, 16384, dev, tiles=128,
                                 programs_per_sm=st._TUNING["chunked_programs_per_sm"])
    assert 64 % chunked == 0 and chunked > serial
    assert 128 * 256 // chunked >= st._TUNING["chunked_programs_per_sm"] * 132
