"""The fused numba CPU scan against the sequential reference (run in fp64 on the same fp32 values):
lengths 1..65536, ragged channel blocks, extreme steps, determinism; gradients and fp64 through the
torch backend; the dispatcher's choice, its fallbacks and the JIT cache location.

Shapes stay few (each new dtype/layout combination is a numba compile on CI's 2 cores)."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest
import torch

numba = pytest.importorskip("numba")

from fusionmamba_cli.ops import selective_scan  # noqa: E402
from fusionmamba_cli.ops import scan_numba  # noqa: E402
from fusionmamba_cli.ops.scan_numba import selective_scan_numba, selective_scan_numba_time_major  # noqa: E402
from fusionmamba_cli.ops.scan_reference import selective_scan_ref  # noqa: E402
from fusionmamba_cli.ops.scan_torch import selective_scan_torch  # noqa: E402
from fusionmamba_cli.ops.selective_scan import available_backends, resolve_backend  # noqa: E402

from tests.conftest import REPO  # noqa: E402

dispatch = importlib.import_module("fusionmamba_cli.ops.selective_scan")


def _inputs(length: int, *, batch=2, groups=4, per_group=3, n_state=16, dt_scale=1.0, seed=0):
    """fp32 inputs (the kernel's precision); the oracle runs on their fp64 copies."""
    g = torch.Generator().manual_seed(seed)
    channels = groups * per_group
    u = torch.randn(batch, channels, length, generator=g)
    delta = torch.randn(batch, channels, length, generator=g) * dt_scale
    A = -torch.exp(torch.randn(channels, n_state, generator=g))
    B = torch.randn(batch, groups, n_state, length, generator=g)
    C = torch.randn(batch, groups, n_state, length, generator=g)
    D = torch.randn(channels, generator=g)
    bias = torch.randn(channels, generator=g)
    return u, delta, A, B, C, D, bias


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()


def _oracle(*args, softplus: bool = True) -> torch.Tensor:
    return selective_scan_ref(*[None if a is None else a.double() for a in args[:7]], softplus)


@pytest.mark.parametrize("length", [1, 2, 3, 17, 64, 257, 4096])
def test_numba_matches_reference_forward(length):
    args = _inputs(length)
    assert _rel_err(selective_scan_numba(*args), _oracle(*args)) < 1e-5


def test_numba_matches_reference_at_65536():
    args = _inputs(65536, batch=1, groups=1, per_group=2, n_state=4)
    assert _rel_err(selective_scan_numba(*args), _oracle(*args)) < 1e-5


@pytest.mark.parametrize("per_group", [16, 40])
def test_full_and_ragged_channel_blocks(per_group):
    """One whole 16-channel block per direction, and 2.5 blocks (the last one's spare lanes idle)."""
    args = _inputs(50, batch=1, groups=2, per_group=per_group)
    assert _rel_err(selective_scan_numba(*args), _oracle(*args)) < 1e-5


@pytest.mark.parametrize("delta_value", [1e-4, 1e-2, 1.0, 10.0])
def test_extreme_step_sizes_stay_finite_and_exact(delta_value):
    """dt from 1e-4 to 10 (A down to -e^3, dt*A past exp's underflow): finite and exact."""
    u, _, A, B, C, D, _ = _inputs(300)
    delta = torch.full_like(u, delta_value)
    ours = selective_scan_numba(u, delta, A, B, C, D, None, False)
    assert torch.isfinite(ours).all()
    assert _rel_err(ours, _oracle(u, delta, A, B, C, D, None, softplus=False)) < 1e-5


def _time_major(u, delta, A, B, C, D, bias):
    """The same inputs in the time-major layouts, B and C as strided slices of one buffer (as the
    model's x_proj output gives them)."""
    batch, channels, length = u.shape
    groups = B.shape[1]

    def tm(x):
        return x.reshape(batch, groups, channels // groups, length).transpose(2, 3).contiguous()

    projections = torch.cat([B.transpose(2, 3), C.transpose(2, 3)], dim=3)  # (batch, K, L, 2N)
    n_state = B.shape[2]
    return tm(u), tm(delta), A, projections[..., :n_state], projections[..., n_state:], D, bias


@pytest.mark.parametrize("length", [1, 5, 300])
@pytest.mark.parametrize("per_group", [3, 64, 100])
def test_time_major_entry_matches_reference(length, per_group):
    """Chunks of 64 channels: fewer, exactly one, and one and a half per direction."""
    args = _inputs(length, batch=2, groups=2, per_group=per_group)
    y = selective_scan_numba_time_major(*_time_major(*args))
    assert y.shape == (2, 2, length, per_group)
    ref = _oracle(*args).reshape(2, 2, per_group, length).transpose(2, 3)
    assert _rel_err(y, ref) < 1e-5


def test_time_major_front_door_on_every_cpu_backend():
    """`selective_scan_time_major` gives the same scan whichever backend runs it (others get transposes)."""
    args = _inputs(40, batch=1, groups=4, per_group=8)
    tm = _time_major(*args)
    ref = _oracle(*args).reshape(1, 4, 8, 40).transpose(2, 3)
    for backend in ("numba", "torch", "reference"):
        y = dispatch.selective_scan_time_major(*tm[:6], delta_bias=tm[6], backend=backend)
        assert y.shape == (1, 4, 40, 8)
        assert _rel_err(y, ref) < 1e-5, backend
    assert dispatch.prefers_time_major("numba", "cpu") and not dispatch.prefers_time_major("torch", "cpu")


@pytest.mark.parametrize("rank", [1, 3])
def test_time_major_low_rank_step_is_projected_in_the_kernel(rank):
    """With delta_proj (K, D, R) the kernel forms delta = factors @ proj.T itself (mamba's dt_proj):
    the same scan as the full delta, on every backend."""
    g = torch.Generator().manual_seed(7)
    args = list(_inputs(70, batch=2, groups=4, per_group=80))
    factors = torch.randn(2, 4, 70, rank, generator=g)
    proj = torch.randn(4, 80, rank, generator=g) * 0.5
    full = torch.matmul(factors, proj.transpose(1, 2))  # (batch, K, L, D)
    args[1] = full.transpose(2, 3).reshape(2, 320, 70)  # channel-major delta for the oracle
    ref = _oracle(*args).reshape(2, 4, 80, 70).transpose(2, 3)
    tm = _time_major(*args)
    for backend in ("numba", "torch"):
        y = dispatch.selective_scan_time_major(tm[0], factors, *tm[2:6], delta_bias=tm[6], delta_proj=proj, backend=backend)
        assert _rel_err(y, ref) < 1e-5, backend


def test_softplus_in_the_kernel_over_the_whole_range():
    """Raw steps from -100 to 100 (softplus from ~e^-100 to the identity): the kernel's own softplus
    and exp keep the scan at the reference's values."""
    u, _, A, B, C, D, _ = _inputs(400, batch=1, groups=1, per_group=16)
    delta = torch.linspace(-100, 100, 400).expand(1, 16, 400) * torch.linspace(0.05, 1, 16)[None, :, None]
    A = A * 1e-3  # decays that stay visible even at the largest steps
    got = selective_scan_numba(u, delta, A, B, C, D, None, True)
    assert _rel_err(got, _oracle(u, delta, A, B, C, D, None)) < 1e-5


def test_weight_arrays_follow_in_place_changes_and_new_tensors():
    """The kernel keeps its per-weight arrays for tensors that come back unchanged; an in-place
    change (an optimiser step, load_state_dict) or another tensor must not reuse stale ones."""
    u, delta, A, B, C, D, bias = _inputs(30, batch=1)
    first = selective_scan_numba(u, delta, A, B, C, D, bias)
    A.mul_(0.5)
    D.add_(1.0)
    assert _rel_err(selective_scan_numba(u, delta, A, B, C, D, bias), _oracle(u, delta, A, B, C, D, bias)) < 1e-5
    other = A.clone() * 2  # a new tensor (maybe at a freed address): converted afresh
    assert _rel_err(selective_scan_numba(u, delta, other, B, C, D, bias), _oracle(u, delta, other, B, C, D, bias)) < 1e-5
    assert not torch.equal(first, selective_scan_numba(u, delta, A, B, C, D, bias))


def test_model_constants_follow_a_weight_change():
    """ScanCore2D's cached A, D and bias are remade when a parameter changes in place."""
    from fusionmamba_cli.model import create_model

    torch.manual_seed(0)
    model, reference = create_model("micro").eval(), create_model("micro").eval()
    x1, x2 = torch.rand(2, 1, 1, 24, 24)
    with torch.inference_mode():
        model(x1, x2)  # fills the caches
    model.load_state_dict(reference.state_dict())  # in place: every version counter moves
    with torch.inference_mode():
        assert torch.equal(model(x1, x2), reference(x1, x2))


def test_model_built_under_inference_mode_runs_and_matches():
    """Parameters made under inference mode have no version counter: nothing is cached for them,
    and the forward still gives the normally built model's result."""
    from fusionmamba_cli.model import create_model

    torch.manual_seed(0)
    reference = create_model("micro").eval()
    x1, x2 = torch.rand(2, 1, 1, 24, 24)
    with torch.inference_mode():
        model = create_model("micro").eval()
        model.load_state_dict(reference.state_dict())
        assert torch.equal(model(x1, x2), reference(x1, x2))


def test_without_skip_and_bias():
    u, delta, A, B, C, _, _ = _inputs(33)
    assert _rel_err(selective_scan_numba(u, delta, A, B, C, None, None, True), _oracle(u, delta, A, B, C, None, None)) < 1e-5


def test_deterministic_across_calls_and_thread_counts():
    args = _inputs(700, batch=1, groups=4, per_group=32)
    first = selective_scan_numba(*args)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = selective_scan_numba(*args)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(first, selective_scan_numba(*args)) and torch.equal(first, single)


def test_torch_thread_count_survives_the_first_call():
    """numba's OpenMP pool shares torch's runtime; its start must not undo torch.set_num_threads(1)
    (a fresh process: in this one the pool may already run)."""
    code = (
        "import torch; torch.set_num_threads(1)\n"
        "from fusionmamba_cli.ops.scan_numba import selective_scan_numba\n"
        "u = torch.randn(1, 16, 8); B = torch.randn(1, 4, 16, 8)\n"
        "selective_scan_numba(u, u, -torch.rand(16, 16), B, B)\n"
        "print(torch.get_num_threads())\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "1"


def test_non_contiguous_and_half_inputs():
    """Views are copied to contiguous fp32 once; a bf16 call returns bf16."""
    u, delta, A, B, C, D, bias = _inputs(40, batch=1)
    wide = torch.cat([u, u], dim=-1)[..., ::2]  # a strided view with the same shape as u
    assert not wide.is_contiguous()
    assert _rel_err(selective_scan_numba(wide, delta, A, B, C, D, bias), _oracle(wide.contiguous(), delta, A, B, C, D, bias)) < 1e-5
    half = selective_scan_numba(u.bfloat16(), delta, A, B, C, D, bias)
    assert half.dtype == torch.bfloat16


def test_gradients_come_from_the_torch_backend():
    """The kernel is forward only: inputs that require grad go through the torch scan, whose
    gradients are therefore exactly what autograd gives here."""
    base = _inputs(20, batch=1)
    grads = []
    for fn in (selective_scan_numba, selective_scan_torch):
        args = [t.clone().requires_grad_(True) for t in base]
        out = fn(*args, True)
        out.backward(torch.linspace(-1, 1, out.numel()).view_as(out))
        grads.append([t.grad for t in args])
    for ours, theirs in zip(*grads):
        assert torch.equal(ours, theirs)
    with torch.no_grad():  # and without autograd the fused kernel runs: close, not bit-equal to torch
        fused = selective_scan_numba(*[t.clone().requires_grad_(True) for t in base])
    assert _rel_err(fused, _oracle(*base)) < 1e-5


def test_fp64_runs_in_fp64_through_the_torch_backend():
    args = [t.double() for t in _inputs(30)]
    ours = selective_scan_numba(*args)
    assert ours.dtype == torch.float64 and torch.equal(ours, selective_scan_torch(*args))


def test_auto_is_numba_on_cpu_only(monkeypatch):
    monkeypatch.delenv("FUSIONMAMBA_SCAN_BACKEND", raising=False)
    assert resolve_backend(None, "cpu") == "numba"
    assert "numba" in available_backends("cpu")
    assert "numba" not in available_backends("cuda")  # a CUDA tensor never reaches the CPU kernel
    args = _inputs(33)
    assert torch.equal(selective_scan(*args[:6], delta_bias=args[6]), selective_scan_numba(*args))


def test_missing_numba_falls_back_to_torch_with_one_warning(monkeypatch):
    monkeypatch.delenv("FUSIONMAMBA_SCAN_BACKEND", raising=False)
    monkeypatch.setitem(dispatch._loaded, "numba", None)
    monkeypatch.setitem(dispatch._load_errors, "numba", "ModuleNotFoundError: No module named 'numba'")
    monkeypatch.setattr(dispatch, "_warned", set())
    with pytest.warns(RuntimeWarning, match="No module named 'numba'.*'torch'"):
        assert resolve_backend(None, "cpu") == "torch"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_backend(None, "cpu") == "torch"  # once per process


def test_kernel_that_fails_to_compile_falls_back_once(monkeypatch):
    """A JIT failure on first use: one warning, the torch backend's result, numba not tried again."""
    monkeypatch.delenv("FUSIONMAMBA_SCAN_BACKEND", raising=False)
    monkeypatch.setattr(dispatch, "_warned", set())
    calls = []

    def broken(*args):
        calls.append(1)
        raise numba.core.errors.TypingError("simulated: failed to compile")

    monkeypatch.setattr(scan_numba, "_scan_time_major", broken)
    monkeypatch.setitem(dispatch._loaded, "numba", selective_scan_numba)
    args = _inputs(9)
    with pytest.warns(RuntimeWarning, match="'numba' failed"):
        first = selective_scan(*args[:6], delta_bias=args[6])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = selective_scan(*args[:6], delta_bias=args[6])
    assert calls == [1]
    assert torch.equal(first, selective_scan_torch(*args)) and torch.equal(first, second)


def test_time_major_kernel_that_fails_falls_back_once(monkeypatch):
    """The time-major entry (the model's CPU path) falls back the same way, in the layout asked for."""
    monkeypatch.delenv("FUSIONMAMBA_SCAN_BACKEND", raising=False)
    monkeypatch.setattr(dispatch, "_warned", set())
    monkeypatch.setitem(dispatch._loaded, "numba", selective_scan_numba)
    monkeypatch.setattr(dispatch, "_load_errors", {})

    def broken(*args):
        raise numba.core.errors.TypingError("simulated: failed to compile")

    monkeypatch.setattr(scan_numba, "_scan_time_major", broken)
    args = _inputs(9, batch=1)
    tm = _time_major(*args)
    with pytest.warns(RuntimeWarning, match="'numba' failed"):
        y = dispatch.selective_scan_time_major(*tm[:6], delta_bias=tm[6])
    assert dispatch.resolve_backend(None, "cpu") == "torch"
    assert _rel_err(y, _oracle(*args).reshape(1, 4, 3, 9).transpose(2, 3)) < 1e-5


def _tiny(x):
    return x + 1.0


def test_compiled_code_is_cached_in_numba_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path))
    fn = scan_numba._jit()(_tiny)
    assert fn(1.0) == 2.0
    assert list(tmp_path.rglob("*.nbi")), "no numba cache index written under NUMBA_CACHE_DIR"


def test_no_writable_cache_location_compiles_without_cache(monkeypatch):
    """Read-only package folder and home: numba refuses cache=True at decoration; we JIT per process."""
    monkeypatch.setattr(numba.core.caching.CacheImpl, "_locator_classes", [])
    with pytest.raises(RuntimeError, match="no locator"):
        numba.njit(cache=True)(_tiny)
    assert scan_numba._jit()(_tiny)(1.0) == 2.0


def test_cpu_path_does_not_import_torchdynamo():
    """Importing TorchDynamo costs ~1.8 s of start-up: a CPU fusion must not pull it in."""
    code = (
        "import sys, torch\n"
        "import fusionmamba_cli as fm\n"
        "torch.manual_seed(0); model = fm.create_model('micro').eval()\n"
        "x = torch.rand(1, 1, 16, 16)\n"
        "with torch.inference_mode(): model(x, x)\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
