"""Hostile inputs: every file `fuse` may be handed gives either a one-line error that names the file
and the reason (the batch goes on, nothing partial is written) or a documented correct result.

Each case is checked three ways: the library reader (`read_image`), `fuse` on one pair, and all
cases together in one directory batch next to good pairs.
"""

from __future__ import annotations

import errno
import io
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from fusionmamba_cli.errors import ImageReadError
from fusionmamba_cli.imaging.io import read_image
from tests.cli.helpers import one_thread, read_back, run_cli, save_grey, temp_files  # noqa: F401 - one_thread: autouse fixture
from tests.conftest import smooth_image

SIDE = 16  # partner size when the hostile file has no usable size


def _u8(height: int, width: int, seed: int = 0, channels: int | None = None) -> np.ndarray:
    return (smooth_image(height, width, seed, channels) * 255).round().astype(np.uint8)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_with_header(width: int, height: int, idat: bytes) -> bytes:
    """A PNG that declares any size (CRCs valid) with whatever pixel data we like."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


# --- builders: write the hostile file into `d`, return (its path, partner size (H, W)) -------------


def empty(d):
    (d / "empty.png").write_bytes(b"")
    return d / "empty.png", (SIDE, SIDE)


def random_bytes(d):
    (d / "random.png").write_bytes(np.random.default_rng(0).bytes(3000))
    return d / "random.png", (SIDE, SIDE)


def truncated_png(d):
    data = _encoded(Image.fromarray(_u8(48, 48)), "PNG")
    (d / "trunc_png.png").write_bytes(data[: len(data) // 2])
    return d / "trunc_png.png", (48, 48)


def truncated_jpeg(d):
    data = _encoded(Image.fromarray(_u8(48, 48, channels=3)), "JPEG")
    (d / "trunc_jpeg.jpg").write_bytes(data[: len(data) // 2])
    return d / "trunc_jpeg.jpg", (48, 48)


def zero_size(d):
    (d / "zero.png").write_bytes(_png_with_header(0, 12, zlib.compress(b"")))
    return d / "zero.png", (SIDE, SIDE)


def one_pixel(d):
    Image.fromarray(np.array([[200]], np.uint8)).save(d / "one.png")
    return d / "one.png", (1, 1)


def below_network_minimum(d):  # micro needs multiples of 8, compact 32: 3x5 is padded and cropped
    Image.fromarray(_u8(3, 5)).save(d / "tiny.png")
    return d / "tiny.png", (3, 5)


def strip(d):
    Image.fromarray(_u8(1, 100_000)).save(d / "strip.png")
    return d / "strip.png", (1, 100_000)


def decompression_bomb(d):  # declares 50000x50000 (2.5 Gpx) in a 100-byte file
    (d / "bomb.png").write_bytes(_png_with_header(50_000, 50_000, zlib.compress(b"\0" * 50_001)))
    return d / "bomb.png", (SIDE, SIDE)


def cmyk_jpeg(d):
    Image.fromarray(_u8(24, 32, channels=3), "RGB").convert("CMYK").save(d / "cmyk.jpg", quality=95)
    return d / "cmyk.jpg", (24, 32)


def tiff_16bit(d):
    save_grey(d / "deep.tif", 20, 28, bits=16)
    return d / "deep.tif", (20, 28)


def tiff_16bit_colour(d):
    cv2.imwrite(str(d / "deep_rgb.tif"), (smooth_image(20, 28, 1, channels=3) * 65535).astype(np.uint16))
    return d / "deep_rgb.tif", (20, 28)


def tiff_float(d):
    Image.fromarray(smooth_image(20, 28, 2).astype(np.float32), "F").save(d / "float.tif")
    return d / "float.tif", (20, 28)


def tiff_float_nan(d):
    values = smooth_image(20, 28, 2).astype(np.float32)
    values[3, 4] = np.nan
    Image.fromarray(values, "F").save(d / "nan.tif")
    return d / "nan.tif", (20, 28)


def multi_frame_tiff(d):
    frames = [Image.fromarray(_u8(20, 28, seed)) for seed in range(3)]
    frames[0].save(d / "frames.tif", save_all=True, append_images=frames[1:])
    return d / "frames.tif", (20, 28)


def multi_frame_gif(d):
    frames = [Image.fromarray(_u8(20, 28, seed)) for seed in range(3)]
    frames[0].save(d / "anim.gif", save_all=True, append_images=frames[1:])
    return d / "anim.gif", (20, 28)


def exif_rotated_jpeg(d):  # stored 24x40 (H x W) with orientation 6: shown 40x24
    image = Image.fromarray(_u8(24, 40, channels=3), "RGB")
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(d / "rotated.jpg", exif=exif, quality=95)
    return d / "rotated.jpg", (40, 24)


def palette_transparency(d):
    image = Image.fromarray((np.arange(20 * 28).reshape(20, 28) % 4).astype(np.uint8), "P")
    image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 250, 250, 250])
    image.save(d / "palette.png", transparency=0)
    return d / "palette.png", (20, 28)


def non_utf8_name(d):
    path = os.fsencode(d) + b"/caf\xe9 \xff.png"  # Latin-1 bytes: not valid UTF-8
    Image.fromarray(_u8(20, 28)).save(path)
    return Path(os.fsdecode(path)), (20, 28)


def name_with_spaces(d):
    Image.fromarray(_u8(20, 28)).save(d / "with  spaces [1].png")
    return d / "with  spaces [1].png", (20, 28)


def symlink_loop(d):
    os.symlink("loop.png", d / "loop.png")
    return d / "loop.png", (SIDE, SIDE)


def broken_symlink(d):
    os.symlink("nowhere.png", d / "dangling.png")
    return d / "dangling.png", (SIDE, SIDE)


def directory_named_png(d):
    (d / "folder.png").mkdir()
    return d / "folder.png", (SIDE, SIDE)


def fifo(d):  # reading a named pipe would block forever
    os.mkfifo(d / "pipe.png")
    return d / "pipe.png", (SIDE, SIDE)


@dataclass(frozen=True)
class Case:
    build: Callable
    reason: str | None = None  # substring of the one-line error; None: fuses fine
    check: Callable | None = None  # (output pixels, read_image result, source path) -> None
    note: str | None = None  # expected note on success
    # `fuse FILE FILE`: a source that is not there (or a folder) is a usage error (exit 2)
    pair_mode: tuple[int, str] | None = None


def _size_only(out, loaded, source):
    assert out.shape[:2] == loaded.size_hw


def _colour(out, loaded, source):
    assert out.ndim == 3 and out.shape[2] == 3 and out.dtype == np.uint8


def _sixteen(out, loaded, source):
    assert out.dtype == np.uint16 and loaded.bit_depth == 16


def _cmyk(out, loaded, source):
    expected = np.asarray(Image.open(source).convert("RGB"), np.float32) / 255
    assert loaded.is_colour and np.abs(loaded.pixels - expected).max() < 1e-6
    assert out.ndim == 3


def _exif(out, loaded, source):
    stored = np.asarray(Image.open(source), np.float32) / 255  # decoded without the orientation
    assert stored.shape[:2] == (24, 40) and loaded.size_hw == (40, 24)
    assert np.abs(loaded.pixels - np.rot90(stored, -1)).max() < 1e-6  # orientation 6: 90 deg clockwise
    assert out.shape[:2] == (40, 24)


def _palette(out, loaded, source):
    assert loaded.is_colour and out.ndim == 3


def _float(out, loaded, source):
    expected = np.asarray(Image.open(source), np.float32)
    assert np.array_equal(loaded.pixels, expected) and out.dtype == np.uint16


def _first_frame(out, loaded, source):
    assert np.abs(loaded.pixels - _u8(20, 28, 0) / 255).max() < 1e-6


CASES: dict[str, Case] = {
    "empty file": Case(empty, "empty file"),
    "random bytes": Case(random_bytes, "not an image"),
    "truncated png": Case(truncated_png, "truncated"),
    "truncated jpeg": Case(truncated_jpeg, "truncated"),
    "zero-size image": Case(zero_size, "zero size"),
    "1x1 image": Case(one_pixel, check=_size_only),
    "smaller than the network minimum": Case(below_network_minimum, check=_size_only),
    "100000x1 strip": Case(strip, check=_size_only),
    "decompression bomb": Case(decompression_bomb, "too large to decode safely"),
    "cmyk jpeg": Case(cmyk_jpeg, check=_cmyk),
    "16-bit tiff": Case(tiff_16bit, check=_sixteen),
    "16-bit colour tiff": Case(tiff_16bit_colour, check=lambda o, l, s: (_sixteen(o, l, s), _colour_shape(o))),
    "float tiff": Case(tiff_float, check=_float),
    "float tiff with nan": Case(tiff_float_nan, "NaN"),
    "multi-frame tiff": Case(multi_frame_tiff, check=_first_frame, note="3 frames: using the first"),
    "multi-frame gif": Case(multi_frame_gif, check=_size_only, note="3 frames: using the first"),
    "exif-rotated jpeg": Case(exif_rotated_jpeg, check=_exif),
    "palette png with transparency": Case(palette_transparency, check=_palette, note="alpha channel dropped"),
    "non-utf-8 file name": Case(non_utf8_name, check=_size_only),
    "spaces and brackets in the name": Case(name_with_spaces, check=_size_only),
    "symlink loop": Case(symlink_loop, "symbolic link loop", pair_mode=(2, "symbolic link loop")),
    "broken symlink": Case(broken_symlink, "broken symbolic link", pair_mode=(2, "broken symbolic link")),
    "directory named like an image": Case(directory_named_png, "is a directory", pair_mode=(2, "give two files or two directories")),
    "named pipe": Case(fifo, "not a regular file"),
}


def _colour_shape(out):
    assert out.ndim == 3 and out.shape[2] == 3


def _printed(path: Path) -> str:
    from fusionmamba_cli.cli.fuse import printable

    return printable(path)


@pytest.mark.parametrize("name", list(CASES))
def test_read_image(name, tmp_path):
    case = CASES[name]
    source, _ = case.build(tmp_path)
    if case.reason is not None:
        with pytest.raises(ImageReadError) as info:
            read_image(source)
        message = str(info.value)
        assert message.startswith(str(source)) and case.reason in message and "\n" not in message
        return
    loaded = read_image(source)
    assert loaded.pixels.dtype == np.float32 and 0.0 <= loaded.pixels.min() and loaded.pixels.max() <= 1.0
    if case.note:
        assert case.note in loaded.notes


@pytest.mark.parametrize("name", list(CASES))
def test_fuse_one_pair(name, tmp_path, capsys, micro_weights):
    case = CASES[name]
    (tmp_path / "a").mkdir()
    source, partner_hw = case.build(tmp_path / "a")
    partner = save_grey(tmp_path / "partner.png", *partner_hw, seed=5)
    out = tmp_path / "out" / "fused.png"
    result = run_cli(capsys, "fuse", source, partner, "-o", out, "-w", micro_weights, "--device", "cpu")
    assert temp_files(tmp_path) == []
    if case.reason is not None:
        code, reason = case.pair_mode or (1, case.reason)
        assert result.code == code, result.err
        assert len(result.error_lines) == 1, result.err
        assert _printed(source) in result.error_lines[0] and reason in result.error_lines[0]
        assert not out.exists()
        return
    assert result.code == 0, result.err
    assert result.error_lines == []
    case.check(read_back(out), read_image(source), source)
    if case.note:
        assert case.note in result.err


def test_batch_goes_on_past_every_hostile_input(tmp_path, capsys, micro_weights):
    """All cases in one directory batch with good pairs around them: one line per bad file, every
    good or documented-good pair written, nothing partial."""
    first, second, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    first.mkdir(), second.mkdir()
    sources = {}
    for name, case in CASES.items():
        source, partner_hw = case.build(first)
        stem = os.fsencode(source.name).rsplit(b".", 1)[0]
        save_grey(os.fsencode(second) + b"/" + stem + b".png", *partner_hw, seed=3)
        sources[name] = (source, os.fsdecode(stem))
    for i in range(2):
        save_grey(first / f"good{i}.png", 24, 32, seed=i)
        save_grey(second / f"good{i}.png", 24, 32, seed=10 + i)
    result = run_cli(capsys, "fuse", first, second, "-o", out, "-w", micro_weights, "--device", "cpu")
    assert result.code == 1
    bad = {n for n, c in CASES.items() if c.reason is not None}
    assert len(result.error_lines) == len(bad), result.err
    for name, (source, stem) in sources.items():
        written = out / f"{stem}.png"
        if name in bad:
            lines = [line for line in result.error_lines if _printed(source) in line]
            assert len(lines) == 1 and CASES[name].reason in lines[0], (name, result.err)
            assert not written.exists()
        else:
            assert written.exists(), name
    assert (out / "good0.png").exists() and (out / "good1.png").exists()
    good = len(CASES) - len(bad) + 2
    assert f"{good} fused, 0 skipped (exist), {len(bad)} failed" in result.err
    assert temp_files(tmp_path) == []


# --- the output side ---------------------------------------------------------------------------


def _pairs(tmp_path: Path, count: int, size=(24, 32)) -> tuple[Path, Path]:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir(exist_ok=True), second.mkdir(exist_ok=True)
    for i in range(count):
        save_grey(first / f"p{i}.png", *size, seed=i)
        save_grey(second / f"p{i}.png", *size, seed=100 + i)
    return first, second


def _interrupt_third_write(monkeypatch, keep, then) -> None:
    """Make the 3rd image write put `keep(payload)` bytes on disk, then call `then()` (which raises
    or signals) before the rest is written; every other write goes through."""
    from fusionmamba_cli import atomic

    real_write = atomic._write_all
    calls = []

    def write(fd, payload):
        calls.append(1)
        if len(calls) == 3:
            real_write(fd, bytes(payload)[: keep(payload)])
            then()
        real_write(fd, payload)

    monkeypatch.setattr(atomic, "_write_all", write)


def test_disk_full_mid_batch(tmp_path, capsys, micro_weights, monkeypatch):
    """ENOSPC on the 3rd write (after half of it reached the disk): that pair fails with one line,
    the batch goes on, no partial or temp file remains."""
    from fusionmamba_cli import atomic

    first, second = _pairs(tmp_path, 5)
    real_write = atomic._write_all

    def disk_full():
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    _interrupt_third_write(monkeypatch, keep=lambda payload: len(payload) // 2, then=disk_full)
    out = tmp_path / "out"
    result = run_cli(capsys, "fuse", first, second, "-o", out, "-w", micro_weights, "--device", "cpu")
    assert result.code == 1
    assert len(result.error_lines) == 1
    assert "p2.png" in result.error_lines[0] and "No space left on device" in result.error_lines[0]
    assert sorted(p.name for p in out.iterdir()) == ["p0.png", "p1.png", "p3.png", "p4.png"]
    assert temp_files(tmp_path) == []
    assert "4 fused, 0 skipped (exist), 1 failed" in result.err
    # resuming once there is space again writes only the missing pair
    monkeypatch.setattr(atomic, "_write_all", real_write)
    again = run_cli(capsys, "fuse", first, second, "-o", out, "-w", micro_weights, "--device", "cpu")
    assert again.code == 0 and "1 fused, 4 skipped (exist), 0 failed" in again.err


def test_rename_failure_leaves_nothing(tmp_path, capsys, micro_weights, monkeypatch):
    """A failure at the final rename (e.g. the folder turned read-only mid-batch) removes the temp file."""
    from fusionmamba_cli import atomic

    first, second = _pairs(tmp_path, 3)
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if str(dst).endswith("p1.png"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(atomic.os, "replace", replace)
    out = tmp_path / "out"
    result = run_cli(capsys, "fuse", first, second, "-o", out, "-w", micro_weights, "--device", "cpu")
    assert result.code == 1 and len(result.error_lines) == 1
    assert "p1.png: cannot write (Read-only file system)" in result.error_lines[0]
    assert sorted(p.name for p in out.iterdir()) == ["p0.png", "p2.png"]


def test_read_only_output_directory_simulated(tmp_path, capsys, micro_weights, monkeypatch):
    """A read-only output location is refused up front (exit 2, one line) instead of failing every
    pair. Simulated (tests may run as root, who ignores permission bits)."""
    import tempfile

    from fusionmamba_cli.fusion import plan as fuse_plan  # where the output folder is probed

    first, second = _pairs(tmp_path, 2)

    def mkstemp(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(fuse_plan.tempfile, "mkstemp", mkstemp)
    result = run_cli(capsys, "fuse", first, second, "-o", tmp_path / "out", "-w", micro_weights, "--device", "cpu")
    monkeypatch.setattr(fuse_plan.tempfile, "mkstemp", tempfile.mkstemp)
    assert result.code == 2 and len(result.error_lines) == 1
    assert "out: output directory is not writable (Read-only file system)" in result.error_lines[0]


def test_output_under_a_file(tmp_path, capsys, micro_weights):
    first, second = _pairs(tmp_path, 1)
    (tmp_path / "file").write_text("x")
    result = run_cli(capsys, "fuse", first, second, "-o", tmp_path / "file" / "out", "-w", micro_weights, "--device", "cpu")
    assert result.code == 2 and len(result.error_lines) == 1 and "cannot create output directory" in result.err


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores permission bits (covered by the simulated test)")
def test_read_only_output_directory_chmod(tmp_path, capsys, micro_weights):
    first, second = _pairs(tmp_path, 2)
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o555)
    try:
        result = run_cli(capsys, "fuse", first, second, "-o", out, "-w", micro_weights, "--device", "cpu")
    finally:
        out.chmod(0o755)
    assert result.code == 2 and "not writable" in result.err and list(out.iterdir()) == []


def test_symlink_loops_in_input_directories(tmp_path, capsys, micro_weights):
    """Loops among the directory's entries (a file loop, a folder pointing at its parent) neither
    hang nor crash the listing."""
    first, second = _pairs(tmp_path, 2)
    os.symlink(".", first / "self")  # a directory loop: not descended into (matching is not recursive)
    os.symlink("b.png", first / "a.png")
    os.symlink("a.png", first / "b.png")  # a two-link loop
    save_grey(second / "a.png", 24, 32)
    result = run_cli(capsys, "fuse", first, second, "-o", tmp_path / "out", "-w", micro_weights, "--device", "cpu")
    assert result.code == 1
    assert len(result.error_lines) == 1 and "a.png: symbolic link loop" in result.error_lines[0]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["p0.png", "p1.png"]


def test_bomb_limit_is_pillows_hard_limit(tmp_path, monkeypatch):
    """Between Pillow's warning (MAX_IMAGE_PIXELS) and its error (twice that) an image is read:
    large scans are legitimate; only the hard limit (179 Mpx by default) is refused."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    Image.fromarray(_u8(40, 40)).save(tmp_path / "large.png")  # 1600 px: between 1x and 2x
    Image.fromarray(_u8(50, 50)).save(tmp_path / "huge.png")  # 2500 px: above 2x
    assert read_image(tmp_path / "large.png").size_hw == (40, 40)
    with pytest.raises(ImageReadError, match="too large to decode safely"):
        read_image(tmp_path / "huge.png")


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation(tmp_path, orientation):
    """JPEGs are turned by Pillow; 16-bit colour files decoded by OpenCV get the same turn."""
    from fusionmamba_cli.imaging.io import _orient

    stored = _u8(24, 40, channels=3)
    image = Image.fromarray(stored, "RGB")
    exif = image.getexif()
    exif[0x0112] = orientation
    image.save(tmp_path / "o.jpg", exif=exif, quality=100)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "o.jpg")), np.float32) / 255
    loaded = read_image(tmp_path / "o.jpg")
    assert loaded.size_hw == ((40, 24) if orientation >= 5 else (24, 40))
    assert np.array_equal(loaded.pixels, expected)
    turned = np.asarray(ImageOps.exif_transpose(image), np.uint8)
    assert np.array_equal(_orient(stored, orientation), turned)


def test_sigterm_mid_write_leaves_no_temp_file(tmp_path, capsys, micro_weights, monkeypatch):
    """SIGTERM (torchrun stopping a job, `kill`) during a write: the temp file is removed, the
    outputs already written stay complete, exit 130."""
    import signal

    first, second = _pairs(tmp_path, 4)

    def terminated():
        os.kill(os.getpid(), signal.SIGTERM)  # delivered here: the handler raises KeyboardInterrupt

    _interrupt_third_write(monkeypatch, keep=lambda payload: 10, then=terminated)
    out = tmp_path / "out"
    result = run_cli(capsys, "fuse", first, second, "-o", out, "-w", micro_weights, "--device", "cpu")
    assert result.code == 130 and "Traceback" not in result.err
    assert temp_files(tmp_path) == []
    assert sorted(p.name for p in out.iterdir()) == ["p0.png", "p1.png"]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the CLI's handler is gone again
