"""The Triton selective scan against the sequential reference: forward and every gradient.

Without a GPU the kernels run through Triton's interpreter on CPU tensors (TRITON_INTERPRET=1 must
be set before the kernels are defined, hence the environment line before any import of triton).
With CUDA they run compiled on the GPU.
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
from fusionmamba_cli.ops.scan_triton import forward as scan_forward  # noqa: E402

if not _CUDA and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
    pytest.skip("no CUDA and TRITON_INTERPRET is disabled: nothing can run the Triton kernels",
                allow_module_level=True)
if not _CUDA and not isinstance(scan_forward._scan_fwd_kernel, triton.runtime.interpreter.InterpretedFunction):
    # imported earlier without the interpreter: redefine the kernels, every module of the package
    # in import order (each binds the names of the ones before it)
    for _name in ("common", "launch", "forward", "backward_statewise", "backward_tiled", "interface"):
        importlib.reload(importlib.import_module(f"fusionmamba_cli.ops.scan_triton.{_name}"))
    st = importlib.reload(st)

from fusionmamba_cli.ops.scan_triton import launch  # noqa: E402

DEVICE = "cuda" if _CUDA else "cpu"
NAMES = ("u", "delta", "A", "B", "C", "D", "delta_bias")


def statewise_tile(monkeypatch, tile):
    """Make the statewise backward use tiles of `tile` steps (several tiles per short sequence)."""
    monkeypatch.setattr(launch, "STATEWISE_TILE_RULES", ((float("inf"), tile),))


def make_inputs(batch=2, groups=4, per_group=4, n_state=16, length=37, *, dt_scale=0.5, a_max=5.0,
                delta_shift=0.0, with_d=True, with_bias=True, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    channels = groups * per_group

    def rnd(*shape):
        return torch.randn(*shape, generator=gen)

    u = rnd(batch, channels, length)
    delta = rnd(batch, channels, length) * dt_scale + delta_shift
    A = -(torch.rand(channels, n_state, generator=gen) * (a_max - 0.1) + 0.1)
    B = rnd(batch, groups, n_state, length)
    C = rnd(batch, groups, n_state, length)
    D = rnd(channels) if with_d else None
    bias = rnd(channels) * 0.3 if with_bias else None
    out = {"u": u.to(dtype), "delta": delta.to(dtype), "A": A, "B": B.to(dtype), "C": C.to(dtype),
           "D": D, "delta_bias": bias}
    return {k: (None if v is None else v.to(DEVICE)) for k, v in out.items()}


def reference(inputs, softplus=True):
    """The oracle in fp64 (inputs upcast), so it is far more accurate than what it judges."""
    args = {k: (None if v is None else v.detach().double()) for k, v in inputs.items()}
    for v in args.values():
        if v is not None:
            v.requires_grad_(True)
    y = selective_scan_ref(args["u"], args["delta"], args["A"], args["B"], args["C"], args["D"],
                           args["delta_bias"], softplus)
    return y, args


def assert_close(actual, expected, name, rtol, atol_rel):
    """|a - e| <= rtol*|e| + atol_rel*max|e| elementwise (scale-aware absolute floor)."""
    actual, expected = actual.detach().double().cpu(), expected.detach().double().cpu()
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert torch.isfinite(actual).all(), f"{name}: non-finite values"
    scale = expected.abs().max().item() or 1.0
    err = (actual - expected).abs()
    bound = rtol * expected.abs() + atol_rel * scale
    worst = (err - bound).max().item()
    assert worst <= 0, f"{name}: max abs err {err.max().item():.3e} (scale {scale:.3e}) exceeds tolerance"


def check(inputs, *, softplus=True, chunk=16, block_d=None, rtol=1e-4, atol_rel=1e-5, grads=True, backward="tiled"):
    """Forward and every gradient against the fp64 reference. Most tests here are the tiled
    backward's (their chunk and block_d are its knobs); the statewise ones pass `backward`."""
    leaves = {k: (None if v is None else v.detach().clone().requires_grad_(grads)) for k, v in inputs.items()}
    y = st.selective_scan_triton(leaves["u"], leaves["delta"], leaves["A"], leaves["B"], leaves["C"],
                                 leaves["D"], leaves["delta_bias"], softplus, chunk=chunk, block_d=block_d,
                                 backward=backward)
    assert y.dtype == inputs["u"].dtype and y.shape == inputs["u"].shape
    y_ref, ref_leaves = reference(inputs, softplus)
    assert_close(y, y_ref, "y", rtol, atol_rel)
    if not grads:
        return
    gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(123)).to(DEVICE)
    names = [k for k in NAMES if leaves[k] is not None]
    got = torch.autograd.grad(y, [leaves[k] for k in names], gy.to(y.dtype))
    want = torch.autograd.grad(y_ref, [ref_leaves[k] for k in names], gy.double())
    for name, g, w in zip(names, got, want):
        assert g.dtype == leaves[name].dtype, f"d{name}: dtype {g.dtype} != {leaves[name].dtype}"
        assert_close(g, w, f"d{name}", rtol, atol_rel)


def test_is_available():
    assert st.is_available()


def test_ragged_length_with_d_and_bias():
    # L = 37: two full tiles of 16 and a ragged one; two channels per backward program
    check(make_inputs(length=37, per_group=2), chunk=16, block_d=2)


def test_single_step():
    check(make_inputs(length=1, per_group=2), chunk=16)


def test_several_chunks_no_d_no_bias():
    # L = 130 spans five tiles of 32, the last one 2 steps long
    check(make_inputs(length=130, with_d=False, with_bias=False, per_group=1, n_state=8), chunk=32, block_d=1)


def test_large_steps_and_strong_decay():
    # delta ~ 10 after the softplus, A down to -50: exp(dt*A) underflows to 0 within one step
    inputs = make_inputs(length=40, per_group=2, delta_shift=8.0, dt_scale=2.0, a_max=50.0, seed=1)
    check(inputs, chunk=16)


def test_softplus_extremes():
    # raw delta both far below 0 (dt ~ e^x, tiny) and above the threshold 20 (dt = x)
    inputs = make_inputs(length=24, per_group=2, a_max=1.0, seed=2)
    sign = torch.where(torch.arange(24, device=DEVICE) % 2 == 0, -1.0, 1.0)
    inputs["delta"] = (sign * 25.0 + torch.randn_like(inputs["delta"])) * 1.0
    inputs["A"] = inputs["A"] * 0.01
    check(inputs, chunk=8, atol_rel=2e-5)


def test_without_softplus():
    inputs = make_inputs(length=21, per_group=2, seed=3)
    inputs["delta"] = inputs["delta"].abs() * 0.3
    check(inputs, softplus=False, chunk=8)


@pytest.mark.parametrize("n_state", [8, 5])
def test_other_state_sizes(n_state):
    # N = 8 (a power of two) and N = 5 (masked up to 8)
    check(make_inputs(length=19, per_group=2, n_state=n_state, seed=4), chunk=8, block_d=2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(dtype):
    inputs = make_inputs(length=20, per_group=2, dtype=dtype, seed=5)
    tol = {torch.float16: (5e-3, 2e-3), torch.bfloat16: (3e-2, 1e-2)}[dtype]
    check(inputs, chunk=8, rtol=tol[0], atol_rel=tol[1])


def test_non_contiguous_inputs():
    base = make_inputs(length=18, per_group=2, seed=6)
    inputs = dict(base)
    # same values, other memory layouts
    inputs["u"] = base["u"].transpose(1, 2).contiguous().transpose(1, 2)
    inputs["B"] = base["B"].permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1)
    inputs["A"] = base["A"].t().contiguous().t()
    assert not inputs["u"].is_contiguous() and not inputs["B"].is_contiguous()
    check(inputs, chunk=8)


@pytest.mark.parametrize("chunk, length", [(256, 300), (512, 520), (512, 1)])
def test_large_chunks(chunk, length):
    # training chunks of 256 and 512 (forward tile and backward tile both = chunk): a ragged last
    # tile (300 = 256 + 44, 520 = 512 + 8) and a single step; batch 2, two channels per backward
    # program. N = 4 keeps the interpreter's per-element scans quick.
    check(make_inputs(batch=2, groups=1, per_group=2, n_state=4, length=length, seed=14), chunk=chunk, block_d=2)


@pytest.mark.parametrize("block_d", [1, 3])
def test_bwd_prefetch(block_d):
    # the backward's prefetch: the next (tile, channel) iteration's inputs are loaded ahead,
    # wrapping from the block's last channel to the previous tile's first; block_d = 3 (odd, not a
    # power of two) and N = 5 (masked), four tiles with a ragged last one
    check(make_inputs(batch=2, groups=1, per_group=3, n_state=5, length=27, seed=15), chunk=8, block_d=block_d)


def test_tiled_warps():
    # warps of the tiled backward by chunk, 4 for a chunk without its own entry
    assert launch.tiled_warps(128) == 4 and launch.tiled_warps(512) == 8 and launch.tiled_warps(48) == 4


def test_default_chunk_forward_only():
    # the production tile size (128), no grad: no states saved
    check(make_inputs(length=150, groups=2, per_group=2, seed=7), chunk=st.DEFAULT_CHUNK, grads=False)


def test_inference_tile_heuristic():
    # no gradient and no explicit chunk: the tile comes from the programs-per-SM rules
    assert launch.infer_config(256, torch.device("cpu")) == (256, 4)  # 132 SMs assumed on CPU
    assert launch.infer_config(16 * 768, torch.device("cpu")) == (64, 1)
    inputs = make_inputs(batch=1, per_group=1, n_state=4, length=10, seed=12)
    check(inputs, chunk=None, grads=False)


def test_no_grad_mode_saves_no_states(monkeypatch):
    # parameters that require grad, but inference under torch.no_grad(): the gradient-free path
    seen = []
    monkeypatch.setattr(launch, "infer_config", lambda programs, device: seen.append(programs) or (16, 1))
    inputs = make_inputs(length=20, groups=2, per_group=1, n_state=4, seed=13)
    A = inputs["A"].clone().requires_grad_(True)
    with torch.no_grad():
        y = st.selective_scan_triton(inputs["u"], inputs["delta"], A, inputs["B"], inputs["C"],
                                     inputs["D"], inputs["delta_bias"])
    assert seen == [2 * 2] and not y.requires_grad
    assert_close(y, reference(inputs)[0], "y", 1e-4, 1e-5)


@pytest.mark.parametrize("impl", ["tiled", "statewise"])
def test_partial_requires_grad(impl, monkeypatch):
    statewise_tile(monkeypatch, 16)
    inputs = make_inputs(length=20 if impl == "statewise" else 12, per_group=2, seed=8)
    u = inputs["u"].clone().requires_grad_(True)
    B = inputs["B"].clone().requires_grad_(True)
    y = st.selective_scan_triton(u, inputs["delta"], inputs["A"], B, inputs["C"], inputs["D"],
                                 inputs["delta_bias"], chunk=8, backward=impl)
    y.sum().backward()
    y_ref, ref = reference(inputs)
    y_ref.sum().backward()
    assert_close(u.grad, ref["u"].grad, "du", 1e-4, 1e-5)
    assert_close(B.grad, ref["B"].grad, "dB", 1e-4, 1e-5)


def test_block_d_must_divide_group():
    inputs = make_inputs(length=4, per_group=2, seed=9)
    u = inputs["u"].clone().requires_grad_(True)
    y = st.selective_scan_triton(u, inputs["delta"], inputs["A"], inputs["B"], inputs["C"], chunk=4, block_d=3,
                                 backward="tiled")
    with pytest.raises(ValueError, match="block_d"):
        y.sum().backward()


def test_choose_block_d():
    dev = torch.device("cpu")  # 132 SMs assumed without CUDA
    # few channels: one channel per program
    assert launch.choose_block_d(1, 256, 64, 16, 1024, dev) == 1
    # many programs: several channels each, always dividing the group, enough programs per SM
    bd = launch.choose_block_d(16, 768, 192, 16, 1024, dev)
    assert bd > 1 and 192 % bd == 0 and 16 * 768 // bd >= launch.PROGRAMS_PER_SM * 132
    # memory budget for the dB/dC partials respected when possible
    bd = launch.choose_block_d(16, 768, 192, 16, 16384, dev)
    assert 2 * 16 * (768 // bd) * 16 * 16384 * 4 <= launch.PARTIAL_BUDGET_BYTES


@pytest.mark.skipif(not _CUDA, reason="the dispatcher only routes CUDA tensors to the triton backend")
def test_dispatcher_routes_to_triton():
    from fusionmamba_cli.ops.selective_scan import resolve_backend, selective_scan

    assert resolve_backend("triton", DEVICE) == "triton"
    inputs = make_inputs(length=33, per_group=2, seed=10)
    y = selective_scan(inputs["u"], inputs["delta"], inputs["A"], inputs["B"], inputs["C"], inputs["D"],
                       delta_bias=inputs["delta_bias"], backend="triton")
    y_ref, _ = reference(inputs)
    assert_close(y, y_ref, "y", 1e-4, 1e-5)


def forward_tile(monkeypatch, tile):
    """Make the forward without an explicit chunk walk tiles of `tile` steps (its warps as shipped)."""
    monkeypatch.setattr(launch, "infer_config", lambda programs, device: (tile, launch.forward_warps(tile)))


def test_inference_forward_other_tile(monkeypatch):
    # the gradient-free forward at a tile the programs-per-SM rules do not pick here
    forward_tile(monkeypatch, 16)
    check(make_inputs(length=21, per_group=2, seed=11), chunk=None, grads=False)


# ---- the statewise backward (backward="statewise") ----------------------------------------------


@pytest.fixture
def statewise(monkeypatch):
    """Select the statewise backward with a small tile (several tiles per sequence). The
    interpreter checks the `reverse=True` scan as the interpreter implements it; GPU runs of this
    file check the GPU's."""
    statewise_tile(monkeypatch, 16)
    return "statewise"


def test_auto_backward_is_statewise_unless_deterministic():
    assert launch.backward_impl("auto") == "statewise"
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        assert launch.backward_impl("auto") == "tiled"
    finally:
        torch.use_deterministic_algorithms(previous)
    assert launch.backward_impl("auto") == "statewise"


@pytest.mark.parametrize("infer_tile, length", [(None, 45), (16, 150)])
def test_auto_backward_gradients(infer_tile, length, monkeypatch):
    # the shipped defaults end to end, every gradient checked. L = 45: statewise tile capped at 64,
    # the forward's tile from the programs-per-SM rules (256) capped at it too. L = 150 with a
    # forward tile of 16: tiles of 64 for the backward, a state saved every fourth forward tile
    if infer_tile:
        forward_tile(monkeypatch, infer_tile)
    statewise_tile(monkeypatch, 64)
    inputs = make_inputs(batch=1, groups=2, per_group=2, n_state=4, length=length, seed=30)
    check(inputs, chunk=None, backward="auto")


def test_statewise_ragged_groups_batch(statewise):
    # L = 37: tiles of 16, 16 and a ragged 5 (walked last to first); batch 2, K = 3 groups of 2
    # channels sharing B/C (atomic dB/dC); N = 5 (not a power of two); D and delta_bias
    check(make_inputs(batch=2, groups=3, per_group=2, n_state=5, length=37, seed=20), chunk=8, backward=statewise)


def test_statewise_single_step(statewise):
    check(make_inputs(batch=2, groups=2, per_group=2, n_state=5, length=1, seed=21), chunk=8, backward=statewise)


def test_statewise_no_d_no_bias(statewise, monkeypatch):
    # tile 32, L = 70: two full tiles and a ragged one; the forward keeps tiles of 8 and saves
    # every fourth state
    statewise_tile(monkeypatch, 32)
    check(make_inputs(batch=1, groups=2, per_group=3, n_state=4, length=70, with_d=False, with_bias=False,
                      seed=22), chunk=8, backward=statewise)


def test_statewise_large_steps_and_strong_decay(statewise):
    # delta ~ 10 after the softplus, A down to -50: exp(dt*A) underflows to 0 within one step
    inputs = make_inputs(batch=1, groups=2, per_group=2, n_state=5, length=40, delta_shift=8.0, dt_scale=2.0,
                         a_max=50.0, seed=23)
    check(inputs, chunk=16, backward=statewise)


def test_statewise_without_softplus(statewise):
    inputs = make_inputs(batch=1, groups=2, per_group=2, n_state=3, length=21, seed=24)
    inputs["delta"] = inputs["delta"].abs() * 0.3
    check(inputs, softplus=False, chunk=8, backward=statewise)


@pytest.mark.parametrize("chunk", [4, 32])
def test_statewise_forward_tile_vs_chunk(chunk, statewise):
    # chunk < statewise tile: the forward walks tiles of `chunk` and saves every 16/chunk-th state;
    # chunk > statewise tile: the forward's tile shrinks to the statewise tile
    check(make_inputs(batch=1, groups=1, per_group=2, n_state=5, length=35, seed=25), chunk=chunk, backward=statewise)


def test_statewise_half_precision(statewise):
    inputs = make_inputs(batch=1, groups=2, per_group=2, n_state=4, length=20, dtype=torch.bfloat16, seed=26)
    check(inputs, chunk=8, rtol=3e-2, atol_rel=1e-2, backward=statewise)


def test_statewise_saved_states_stride(statewise):
    # the forward with tiles of 4 saving every fourth state gives the states the forward with
    # tiles of 16 saves at every tile; the saved tensor is O(L / statewise tile)
    inputs = make_inputs(batch=2, groups=1, per_group=2, n_state=5, length=37, seed=28)
    A = inputs["A"].clone().requires_grad_(True)

    def saved_states(chunk, backward):
        y = st.selective_scan_triton(inputs["u"], inputs["delta"], A, inputs["B"], inputs["C"], inputs["D"],
                                     inputs["delta_bias"], chunk=chunk, backward=backward)
        return y.grad_fn.saved_tensors[7]

    strided = saved_states(4, statewise)
    tiled = saved_states(16, "tiled")
    assert strided.shape == tiled.shape == (2, 2, 3, 5)
    assert_close(strided, tiled, "states", 1e-5, 1e-6)


def test_statewise_launch_rules():
    # the tile: 1024 with at most 2 programs per SM, else 512, capped at max(16, next power of two
    # >= L); warps 4, at most tile / 32; an unknown backward is refused
    assert launch.statewise_tile(16384, 1.9) == 1024 and launch.statewise_tile(16384, 93.0) == 512
    assert launch.statewise_tile(1000, 2.0) == 1024 and launch.statewise_tile(300, 1.9) == 512
    assert launch.statewise_tile(100, 93.0) == 128 and launch.statewise_tile(1, 2.0) == 16
    assert launch.statewise_warps(1024) == 4 and launch.statewise_warps(512) == 4
    assert launch.statewise_warps(64) == 2 and launch.statewise_warps(16) == 1  # at most tile / 32
    inputs = make_inputs(batch=1, groups=1, per_group=1, n_state=2, length=4, seed=29)
    u = inputs["u"].clone().requires_grad_(True)
    with pytest.raises(ValueError, match="backward"):
        st.selective_scan_triton(u, inputs["delta"], inputs["A"], inputs["B"], inputs["C"], chunk=4, backward="fast")


@pytest.mark.parametrize("batch", [1, 2])
def test_statewise_per_channel_gradients_are_contiguous(batch, statewise):
    # dA, dD and ddelta_bias come out of one flat per-batch buffer (dA, then the D and bias shares,
    # summed over the batch by torch): contiguous views, so accumulating them copies nothing
    inputs = make_inputs(batch=batch, groups=2, per_group=2, n_state=5, length=20, seed=31)
    leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
    y = st.selective_scan_triton(*(leaves[k] for k in NAMES), backward=statewise)
    grads = torch.autograd.grad(y.sum(), [leaves["A"], leaves["D"], leaves["delta_bias"]])
    assert all(g.is_contiguous() for g in grads)
    y_ref, ref = reference(inputs)
    want = torch.autograd.grad(y_ref.sum(), [ref["A"], ref["D"], ref["delta_bias"]])
    for name, g, w in zip(("dA", "dD", "ddelta_bias"), grads, want):
        assert_close(g, w, name, 1e-4, 1e-5)


def test_statewise_dB_dC_do_not_share_storage(statewise):
    # the kernel accumulates dB and dC with atomics into two separate tensors: two views of one buffer
    # made Inductor (torch.compile) compute wrong gradients on a GPU
    inputs = make_inputs(batch=1, groups=2, per_group=2, n_state=4, length=20, seed=32)
    leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
    y = st.selective_scan_triton(*(leaves[k] for k in NAMES), backward=statewise)
    dB, dC = torch.autograd.grad(y.sum(), [leaves["B"], leaves["C"]])
    assert dB.untyped_storage().data_ptr() != dC.untyped_storage().data_ptr()
