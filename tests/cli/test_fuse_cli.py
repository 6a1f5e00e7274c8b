"""`fusionmamba fuse`: file and directory modes, colour and 16-bit round trips, odd sizes, resume,
bad inputs with their one-line errors and exit codes (0 done, 1 some pairs failed, 2 usage),
confined output names, refused unsafe weights, deterministic CPU output."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fusionmamba_cli.errors import ImageWriteError
from fusionmamba_cli.fusion.plan import output_path_for
from fusionmamba_cli.fusion.pairs import ImagePair
from fusionmamba_cli.imaging.colour import rgb_to_ycbcr
from tests.cli.helpers import (  # noqa: F401 - one_thread: autouse fixture
    one_thread,
    read_back,
    run_cli,
    save_grey,
    save_rgb,
    temp_files,
)


@pytest.fixture
def fuse(capsys, micro_weights):
    """`fusionmamba fuse ARGS -w micro --device cpu`."""

    def run(*args):
        return run_cli(capsys, "fuse", *args, "-w", micro_weights, "--device", "cpu")

    return run


@pytest.fixture(scope="module")
def skip_sum_weights(tmp_path_factory) -> Path:
    """`micro` with its head zeroed: the output is exactly 2*x1 + 2*x2 (the network's skip sum), so
    dark inputs give an unclipped, predictable fusion to check colour and bit depth against."""
    import torch

    from fusionmamba_cli import create_model, save_weights

    torch.manual_seed(0)
    model = create_model("micro")
    with torch.no_grad():
        model.final_conv.weight.zero_()
        model.final_conv.bias.zero_()
    return save_weights(model, tmp_path_factory.mktemp("weights") / "skip_sum.safetensors")


def _dirs(tmp_path: Path, names, size=(24, 32)) -> tuple[Path, Path]:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir(exist_ok=True), second.mkdir(exist_ok=True)
    for i, name in enumerate(names):
        save_grey(first / f"{name}.png", *size, seed=i)
        save_grey(second / f"{name}.png", *size, seed=100 + i)
    return first, second


def test_file_mode(tmp_path, fuse):
    a, b = save_grey(tmp_path / "ir.png", 40, 56, 1), save_grey(tmp_path / "vis.png", 40, 56, 2)
    result = fuse(a, b, "-o", tmp_path / "fused.png", "--task", "ir_vis")
    assert result.code == 0, result.err
    assert result.err.startswith("wrote ") and result.out == ""
    out = read_back(tmp_path / "fused.png")
    assert out.shape == (40, 56) and out.dtype == np.uint8
    assert temp_files(tmp_path) == []


def test_compile_gives_the_same_image(tmp_path, fuse, monkeypatch):
    import torch

    monkeypatch.setattr("fusionmamba_cli.model.compiled.DEVICE_TYPES", ("cuda", "cpu"))  # CPU-only CI
    real_compile, compiled = torch.compile, []  # Dynamo with its "eager" backend: --compile at CI cost
    monkeypatch.setattr(torch, "compile", lambda model, **kw: compiled.append(1) or real_compile(model, backend="eager", dynamic=False))
    a, b = save_grey(tmp_path / "ir.png", 40, 56, 1), save_grey(tmp_path / "vis.png", 40, 56, 2)
    assert fuse(a, b, "-o", tmp_path / "plain.png").code == 0
    result = fuse(a, b, "-o", tmp_path / "compiled.png", "--compile")
    assert result.code == 0, result.err
    assert compiled == [1]
    assert np.array_equal(read_back(tmp_path / "compiled.png"), read_back(tmp_path / "plain.png"))


def test_file_mode_creates_the_output_folder(tmp_path, fuse):
    a, b = save_grey(tmp_path / "ir.png", 16, 16, 1), save_grey(tmp_path / "vis.png", 16, 16, 2)
    assert fuse(a, b, "-o", tmp_path / "new" / "deeper" / "fused.png").code == 0
    assert (tmp_path / "new" / "deeper" / "fused.png").exists()


def test_directory_mode_and_json(tmp_path, fuse):
    first, second = _dirs(tmp_path, ["x", "y", "z"])
    save_grey(first / "lonely.png", 8, 8)
    result = fuse(first, second, "-o", tmp_path / "out", "--json", "--ext", "tif")
    assert result.code == 0, result.err
    records = [json.loads(line) for line in result.out.splitlines()]
    assert sorted(r["name"] for r in records) == ["x", "y", "z"]
    assert all(r["status"] == "ok" and r["output"].endswith(".tif") for r in records)
    assert result.err == ""  # --json: nothing but JSON (the unmatched-file warning is suppressed too)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x.tif", "y.tif", "z.tif"]


def test_colour_round_trip_pet_mri(tmp_path, capsys, skip_sum_weights):
    """Grey MRI + colour PET: the output is RGB and its Cb/Cr are the PET's (within quantisation)."""
    mri = save_grey(tmp_path / "mri.png", 48, 40, 3, scale=0.15)
    pet = save_rgb(tmp_path / "pet.png", 48, 40, 4, scale=0.25)
    result = run_cli(capsys, "fuse", mri, pet, "-o", tmp_path / "fused.png", "--task", "pet_mri", "-w", skip_sum_weights)
    assert result.code == 0, result.err
    out = read_back(tmp_path / "fused.png")
    assert out.shape == (48, 40, 3)
    pet_chroma = rgb_to_ycbcr(np.asarray(Image.open(pet), np.float32) / 255)[..., 1:]
    out_chroma = rgb_to_ycbcr(out.astype(np.float32) / 255)[..., 1:]
    # where the fused RGB was not clipped, chroma survives up to 8-bit rounding of R, G, B
    luma = rgb_to_ycbcr(out.astype(np.float32) / 255)[..., 0]
    inside = (luma > 0.1) & (luma < 0.9)
    assert inside.mean() > 0.9
    assert np.abs(out_chroma - pet_chroma)[inside].max() < 1.5 / 255


def test_sixteen_bit_round_trip(tmp_path, capsys, skip_sum_weights):
    a = save_grey(tmp_path / "ct.png", 24, 24, 1, bits=16, scale=0.2)
    b = save_grey(tmp_path / "mri.png", 24, 24, 2, bits=16, scale=0.2)
    result = run_cli(capsys, "fuse", a, b, "-o", tmp_path / "fused.png", "--task", "ct_mri", "-w", skip_sum_weights)
    assert result.code == 0, result.err
    out = read_back(tmp_path / "fused.png")
    assert out.dtype == np.uint16 and out.shape == (24, 24)
    expected = 2 * (np.asarray(Image.open(a), np.float64) + np.asarray(Image.open(b), np.float64))
    assert np.abs(out - expected).max() <= 2  # 16-bit precision end to end (8-bit would be ~128 off)
    assert len(np.unique(out)) > 256


@pytest.mark.parametrize("height,width", [(257, 131), (1, 9), (33, 7)])
def test_odd_sizes_come_back_at_their_size(tmp_path, fuse, height, width):
    a, b = save_grey(tmp_path / "a.png", height, width, 1), save_grey(tmp_path / "b.png", height, width, 2)
    assert fuse(a, b, "-o", tmp_path / "fused.png").code == 0
    assert read_back(tmp_path / "fused.png").shape == (height, width)


def test_resume_and_overwrite(tmp_path, fuse):
    first, second = _dirs(tmp_path, ["p0", "p1", "p2"])
    out = tmp_path / "out"
    out.mkdir()
    (out / "p1.png").write_bytes(b"sentinel from an earlier run")
    result = fuse(first, second, "-o", out)
    assert result.code == 0 and "2 fused, 1 skipped (exist), 0 failed" in result.err
    assert (out / "p1.png").read_bytes() == b"sentinel from an earlier run"
    result = fuse(first, second, "-o", out)
    assert "0 fused, 3 skipped (exist), 0 failed" in result.err
    result = fuse(first, second, "-o", out, "--overwrite")
    assert "3 fused, 0 skipped (exist), 0 failed" in result.err
    assert read_back(out / "p1.png").shape == (24, 32)
    assert temp_files(tmp_path) == []


def test_an_existing_single_output_is_replaced(tmp_path, fuse):
    """A rerun with other weights or --task must not keep a stale file: one output file is replaced."""
    a, b = save_grey(tmp_path / "a.png", 8, 8, 1), save_grey(tmp_path / "b.png", 8, 8, 2)
    (tmp_path / "fused.png").write_bytes(b"old")
    result = fuse(a, b, "-o", tmp_path / "fused.png")
    assert result.code == 0 and result.err.startswith("wrote "), result.err
    assert read_back(tmp_path / "fused.png").shape == (8, 8)
    assert temp_files(tmp_path) == []


@pytest.mark.parametrize("which", [0, 1])
def test_single_output_that_is_an_input_is_refused(tmp_path, fuse, which):
    sources = [save_grey(tmp_path / "a.png", 8, 8, 1), save_grey(tmp_path / "b.png", 8, 8, 2)]
    before = sources[which].read_bytes()
    result = fuse(*sources, "-o", sources[which])
    assert result.code == 2, result.err
    assert len(result.error_lines) == 1 and "is an input" in result.error_lines[0]
    assert sources[which].read_bytes() == before


def test_bad_inputs_one_line_each_and_exit_1(tmp_path, fuse):
    first, second = _dirs(tmp_path, ["good", "notimage", "truncated", "mismatch"])
    (first / "notimage.png").write_text("hello, I am text")
    data = (first / "truncated.png").read_bytes()
    (first / "truncated.png").write_bytes(data[: len(data) // 2])
    save_grey(second / "mismatch.png", 30, 30)
    result = fuse(first, second, "-o", tmp_path / "out")
    assert result.code == 1
    lines = result.error_lines
    assert len(lines) == 3, result.err
    assert any(str(first / "notimage.png") in line and "not an image" in line for line in lines)
    assert any(str(first / "truncated.png") in line and "truncated" in line for line in lines)
    assert any(str(first / "mismatch.png") in line and "sizes differ" in line and "--resize" in line for line in lines)
    assert "1 fused, 0 skipped (exist), 3 failed" in result.err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.png"]
    assert fuse(first, second, "-o", tmp_path / "out2", "--resize").code == 1  # mismatch now fuses
    assert (tmp_path / "out2" / "mismatch.png").exists()


@pytest.mark.parametrize(
    "args,message",
    [
        (["missing.png", "b.png", "-o", "f.png"], "missing.png: no such file or directory"),
        (["a.png", "b.png", "-o", "f.txt"], "unsupported output format"),
        (["a.png", "dir", "-o", "f.png"], "give two files or two directories"),
        (["dir", "dir", "-o", "a.png"], "exists and is not a directory"),
        (["dir", "dir", "-o", "o", "--ext", "gif"], "--ext gif: unsupported output format"),
        (["a.png", "b.png", "-o", "f.png", "--max-pixels", "lots"], "--max-pixels lots: not a pixel count"),
    ],
)
def test_usage_errors_exit_2(tmp_path, fuse, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    save_grey(tmp_path / "a.png", 8, 8, 1), save_grey(tmp_path / "b.png", 8, 8, 2)
    (tmp_path / "dir").mkdir()
    result = fuse(*args)
    assert result.code == 2, result.err
    assert len(result.error_lines) == 1 and message in result.error_lines[0], result.err


def test_bad_max_pixels_environment_is_a_usage_error(tmp_path, fuse, monkeypatch):
    monkeypatch.setenv("FUSIONMAMBA_MAX_PIXELS", "huge")
    a, b = save_grey(tmp_path / "a.png", 8, 8, 1), save_grey(tmp_path / "b.png", 8, 8, 2)
    result = fuse(a, b, "-o", tmp_path / "f.png")
    assert result.code == 2 and "FUSIONMAMBA_MAX_PIXELS" in result.err


def test_max_pixels_option_tiles(tmp_path, fuse):
    a, b = save_grey(tmp_path / "a.png", 70, 90, 1), save_grey(tmp_path / "b.png", 70, 90, 2)
    assert fuse(a, b, "-o", tmp_path / "whole.png").code == 0
    assert fuse(a, b, "-o", tmp_path / "tiled.png", "--max-pixels", "48x48", "--tile-overlap", "16").code == 0
    whole, tiled = read_back(tmp_path / "whole.png"), read_back(tmp_path / "tiled.png")
    assert whole.shape == tiled.shape == (70, 90)
    assert not np.array_equal(whole, tiled)  # really tiled (closeness: tests/fusion/test_tiling.py)


@pytest.mark.parametrize("name", ["../../x", "../x", "/abs/x", "a/b", "..", ".", ""])
def test_output_names_are_confined(tmp_path, name):
    with pytest.raises(ImageWriteError, match="escapes the output directory"):
        output_path_for(ImagePair(name, tmp_path / "a.png", tmp_path / "b.png"), tmp_path / "out", ".png")


def test_confined_name_in_a_library_batch(tmp_path, micro_weights):
    """A batch item whose name tries to climb out is refused; the others are written."""
    from fusionmamba_cli import load_model
    from fusionmamba_cli.fusion.batch import fuse_pairs
    from fusionmamba_cli.fusion.pipeline import Fuser

    a, b = save_grey(tmp_path / "a.png", 8, 8, 1), save_grey(tmp_path / "b.png", 8, 8, 2)
    out = tmp_path / "deep" / "out"
    out.mkdir(parents=True)
    items = []
    for name in ("ok", "../../x"):
        try:
            items.append((ImagePair(name, a, b), output_path_for(ImagePair(name, a, b), out, ".png")))
        except ImageWriteError:
            continue
    outcomes = fuse_pairs(Fuser(load_model(micro_weights)), items)
    assert [o.name for o in outcomes] == ["ok"]
    assert not (tmp_path / "x.png").exists() and sorted(p.name for p in out.iterdir()) == ["ok.png"]


def test_output_would_overwrite_an_input(tmp_path, fuse):
    first, second = _dirs(tmp_path, ["p"])
    result = fuse(first, second, "-o", first, "--overwrite")
    assert result.code == 1 and "output would overwrite an input" in result.err
    assert read_back(first / "p.png").shape == (24, 32)


def test_markup_and_control_characters_in_names_print_literally(tmp_path, fuse):
    first, second = _dirs(tmp_path, ["[bold]x", "tab\there"])
    (first / "[bold]x.png").write_text("not an image")
    result = fuse(first, second, "-o", tmp_path / "out")
    assert result.code == 1
    assert len(result.error_lines) == 1 and "[bold]x.png: not an image" in result.error_lines[0]
    assert (tmp_path / "out" / "tab\there.png").exists()


def test_unsafe_weights_are_refused(tmp_path, capsys):
    """A pickle that would run code on load is refused (torch.load(weights_only=True) only)."""
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"state_dict": Exploit()}, protocol=2))
    a, b = save_grey(tmp_path / "a.png", 8, 8, 1), save_grey(tmp_path / "b.png", 8, 8, 2)
    result = run_cli(capsys, "fuse", a, b, "-o", tmp_path / "f.png", "-w", evil, "--device", "cpu")
    assert result.code == 1 and len(result.error_lines) == 1 and "evil.pth" in result.error_lines[0]
    assert not marker.exists() and not (tmp_path / "f.png").exists()


def test_deterministic_on_cpu(tmp_path, fuse):
    """Same input, weights and device: bit-identical files, run after run (tiled or not)."""
    a, b = save_grey(tmp_path / "a.png", 70, 90, 1, bits=16), save_grey(tmp_path / "b.png", 70, 90, 2, bits=16)
    for name in ("1", "2"):
        assert fuse(a, b, "-o", tmp_path / f"whole{name}.png").code == 0
        assert fuse(a, b, "-o", tmp_path / f"tiled{name}.png", "--tile", "48", "--tile-overlap", "8").code == 0
    assert (tmp_path / "whole1.png").read_bytes() == (tmp_path / "whole2.png").read_bytes()
    assert (tmp_path / "tiled1.png").read_bytes() == (tmp_path / "tiled2.png").read_bytes()


def test_broken_pipe_on_json_output(tmp_path, fuse, monkeypatch):
    """`fuse DIR DIR -o OUT --json | head -1`: the reader goes away; we stop quietly (exit 141),
    every output written so far is complete, no temp file remains."""
    import sys

    first, second = _dirs(tmp_path, ["p0", "p1", "p2"])
    writes = []

    class ClosedAfterOne:
        def write(self, text):
            writes.append(text)
            if len(writes) > 1:
                raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

        def fileno(self):
            return devnull_fd

    devnull_fd = os.open(os.devnull, os.O_WRONLY)
    monkeypatch.setattr(sys, "stdout", ClosedAfterOne())
    try:
        result = fuse(first, second, "-o", tmp_path / "out", "--json")
    finally:
        os.close(devnull_fd)
    assert result.code == 141
    assert "Traceback" not in result.err
    assert temp_files(tmp_path) == []
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["p0.png", "p1.png"]  # the second output was written before its line failed


def test_outputs_get_normal_permissions(tmp_path, fuse):
    """Atomic writes go through mkstemp (0600); the final file gets what open() would give."""
    a, b = save_grey(tmp_path / "a.png", 8, 8, 1), save_grey(tmp_path / "b.png", 8, 8, 2)
    assert fuse(a, b, "-o", tmp_path / "f.png").code == 0
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "f.png").stat().st_mode & 0o777 == 0o666 & ~umask


def test_json_lines_into_a_real_head_stop_quietly(tmp_path, micro_weights):
    """`fuse DIR DIR -o OUT --json | head -1` through a shell: exit 141, one line, no traceback, and
    the batch stops instead of fusing all the pairs into a closed pipe."""
    import subprocess
    import sys

    from tests.conftest import REPO

    first, second = _dirs(tmp_path, [f"p{i:02d}" for i in range(20)], size=(64, 64))
    out = tmp_path / "out"
    command = (
        f'"$PY" -m fusionmamba_cli fuse "$A" "$B" -o "$OUT" --json -w "$W" --device cpu --threads 1 | head -1; '
        'exit "${PIPESTATUS[0]}"'
    )
    env = {**os.environ, "PY": sys.executable, "A": str(first), "B": str(second), "OUT": str(out),
           "W": str(micro_weights), "PYTHONPATH": str(REPO)}
    proc = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 141, proc.stderr
    assert "Traceback" not in proc.stderr and "error" not in proc.stderr, proc.stderr
    assert len(proc.stdout.splitlines()) == 1 and json.loads(proc.stdout)["status"] == "ok"
    written = sorted(p.name for p in out.iterdir())
    assert 1 <= len(written) < 20, written
    assert temp_files(tmp_path) == []


def test_ctrl_c_in_a_batch_says_how_far_it_got(tmp_path, fuse, monkeypatch):
    from fusionmamba_cli.fusion.pipeline import Fuser

    first, second = _dirs(tmp_path, ["p0", "p1", "p2", "p3", "p4"])
    real, calls = Fuser.fuse_many, []

    def interrupted_on_the_third(self, pairs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, pairs)

    monkeypatch.setattr(Fuser, "fuse_many", interrupted_on_the_third)
    result = fuse(first, second, "-o", tmp_path / "out")
    assert result.code == 130
    assert "interrupted after 2 of 5 pairs; rerun the same command to resume" in result.err
    assert "Traceback" not in result.err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["p0.png", "p1.png"]


def test_plain_progress_lines_off_a_terminal(tmp_path, fuse, monkeypatch):
    """stderr is not a terminal here (captured): a live bar would show nothing, so plain lines come."""
    from fusionmamba_cli.cli import progress

    monkeypatch.setattr(progress, "PLAIN_PROGRESS_SECONDS", 0.0)  # a line after every pair
    first, second = _dirs(tmp_path, ["p0", "p1", "p2"])
    result = fuse(first, second, "-o", tmp_path / "out")
    assert result.code == 0, result.err
    lines = [line for line in result.err.splitlines() if line.startswith("fusing: ")]
    assert [line.split(",")[0] for line in lines] == ["fusing: 1/3 pairs", "fusing: 2/3 pairs"]
    assert all(" pairs/s, ETA " in line for line in lines)
    quiet = fuse(first, second, "-o", tmp_path / "out2", "--quiet")
    assert "fusing: " not in quiet.err


def test_plain_progress_rate_and_eta():
    from io import StringIO

    from rich.console import Console

    from fusionmamba_cli.cli.progress import PlainProgress

    now = [100.0]
    sink = StringIO()
    progress = PlainProgress(Console(file=sink, width=200), "fusing", 10, interval=5, clock=lambda: now[0])
    for seconds in (1, 1, 4):  # 6 s for 3 pairs: one line, when 5 s have passed
        now[0] += seconds
        progress.advance()
    assert sink.getvalue().splitlines() == ["fusing: 3/10 pairs, 0.50 pairs/s, ETA 14 s"]


def test_threads_option_sets_torch_threads(tmp_path, fuse, monkeypatch):
    import torch

    seen = []
    monkeypatch.setattr(torch, "set_num_threads", seen.append)
    a, b = save_grey(tmp_path / "a.png", 8, 8, 1), save_grey(tmp_path / "b.png", 8, 8, 2)
    assert fuse(a, b, "-o", tmp_path / "f.png", "--threads", "3").code == 0
    assert seen == [3]
    assert fuse(a, b, "-o", tmp_path / "f.png", "--threads", "0").code == 2


@pytest.mark.parametrize("load,omp,expected", [(1.5, None, 1), (0.2, None, 2), (3.0, None, 1), (1.5, "3", 3)])
def test_default_thread_count_leaves_out_busy_cores(monkeypatch, load, omp, expected):
    from fusionmamba_cli import threads

    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (load, 0.0, 0.0))
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    assert threads.default_thread_count() == expected


def test_inputs_in_the_wrong_order_get_a_warning(tmp_path, fuse):
    """PET given first for pet_mri, or a colour PET image under ct_mri: fused anyway, with a warning
    naming the expected order; the right order (or a grey image stored as RGB) gets none."""
    mri, pet = save_grey(tmp_path / "mri.png", 24, 24, 1), save_rgb(tmp_path / "pet.png", 24, 24, 2)
    grey_rgb = tmp_path / "grey_rgb.png"
    Image.open(mri).convert("RGB").save(grey_rgb)
    swapped = fuse(pet, mri, "-o", tmp_path / "swapped.png", "--task", "pet_mri")
    assert swapped.code == 0 and (tmp_path / "swapped.png").exists()
    [warning] = [line for line in swapped.err.splitlines() if line.startswith("warning:")]
    assert "inputs look swapped" in warning and "mri then pet" in warning
    wrong_task = fuse(mri, pet, "-o", tmp_path / "ct.png", "--task", "ct_mri")
    assert wrong_task.code == 0 and "ct_mri takes two grey images (ct then mri)" in wrong_task.err
    for args in ((mri, pet, "--task", "pet_mri"), (grey_rgb, mri, "--task", "pet_mri"), (pet, mri)):
        right = fuse(*args[:2], "-o", tmp_path / "ok.png", *args[2:])
        assert right.code == 0 and "warning:" not in right.err, (args, right.err)
    as_json = fuse(pet, mri, "-o", tmp_path / "j.png", "--task", "pet_mri", "--json")
    assert "inputs look swapped" in json.loads(as_json.out)["warnings"][0]


def test_unknown_weights_name_is_a_usage_error(tmp_path, capsys):
    a, b = save_grey(tmp_path / "a.png", 8, 8, 1), save_grey(tmp_path / "b.png", 8, 8, 2)
    result = run_cli(capsys, "fuse", a, b, "-o", tmp_path / "f.png", "--weights", "compact-ctmri", "--device", "cpu")
    assert result.code == 2
    assert len(result.error_lines) == 1 and "unknown weights name 'compact-ctmri'" in result.error_lines[0]
    assert not (tmp_path / "f.png").exists()
