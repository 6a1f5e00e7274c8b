"""`evaluate`: scoring a folder of fused images and our model's outputs, JSON and CSV shapes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fusionmamba_cli.evaluation import EvaluationResult, best_per_metric, evaluate_defects, evaluate_fused_dir, resolve_metrics
from fusionmamba_cli.metrics import DEFECT_KEYS, METRIC_KEYS, SCORE_KEYS, defect_figures, load_grey, score_triplet
from tests.conftest import REPO, shared_path, smooth_image


def _write(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((pixels * 255).round().astype(np.uint8)).save(path)


@pytest.fixture()
def tiny_split(tmp_path: Path) -> Path:
    """A pet_mri 'test' split of three 40x48 pairs (PET in colour) and an 'average' fused folder."""
    root = tmp_path / "data"
    for i in range(3):
        _write(root / "pet_mri/test/mri" / f"s{i}.png", smooth_image(40, 48, seed=i))
        _write(root / "pet_mri/test/pet" / f"s{i}.png", smooth_image(40, 48, seed=10 + i, channels=3))
    fused = tmp_path / "average"
    fused.mkdir()
    for i in range(2):  # s2 is missing on purpose
        a = load_grey(root / "pet_mri/test/mri" / f"s{i}.png").astype(int)
        b = load_grey(root / "pet_mri/test/pet" / f"s{i}.png").astype(int)
        Image.fromarray(((a + b + 1) // 2).astype(np.uint8)).save(fused / f"s{i}.png")
    (fused / "stray.png").write_bytes((fused / "s0.png").read_bytes())
    return tmp_path


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fusionmamba_cli", *args], capture_output=True, text=True, cwd=REPO)


def test_fused_folder_scores_match_the_metrics_library(tiny_split):
    root = tiny_split / "data"
    result = evaluate_fused_dir(root, "pet_mri", "test", tiny_split / "average", ["SF", "Qabf"])
    assert result.n == 2 and result.missing == ["s2"] and result.extra == ["stray"]
    a = load_grey(root / "pet_mri/test/mri/s0.png")
    b = load_grey(root / "pet_mri/test/pet/s0.png")
    f = load_grey(tiny_split / "average/s0.png")
    assert result.per_image[0]["Qabf"] == pytest.approx(score_triplet(a, b, f, ["Qabf"])["Qabf"])


def test_cli_json_for_a_fused_folder(tiny_split):
    proc = _cli("evaluate", "--task", "pet_mri", "--data", str(tiny_split / "data"), "--fused", str(tiny_split / "average"), "--json", "--csv", str(tiny_split / "rows.csv"))
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    assert payload["n"] == 2 and payload["task"] == "pet_mri" and payload["split"] == "test"
    assert list(payload["mean"]) == list(SCORE_KEYS) == [*METRIC_KEYS, "clip", "grain", "grid"]
    assert payload["mean"]["MS-SSIM"] is None  # images under 161 px: not defined
    assert [row["name"] for row in payload["per_image"]] == ["s0", "s1"]
    # the defect figures are summarised by median and max over the images (issue 15's criteria)
    assert list(payload["median"]) == list(payload["max"]) == list(DEFECT_KEYS)
    grain = [row["grain"] for row in payload["per_image"]]
    assert payload["median"]["grain"] == pytest.approx(np.median(grain)) and payload["max"]["grain"] == max(grain)
    rows = (tiny_split / "rows.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[0].endswith(",FMI_pixel,clip,grain,grid")


def test_cli_model_mode_and_compare(tiny_split, micro_weights):
    save = tiny_split / "ours"
    proc = _cli("evaluate", "--task", "pet_mri", "--data", str(tiny_split / "data"), "--weights", str(micro_weights), "--metrics", "SF,VIF", "--save-fused", str(save), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["n"] == 3
    assert sorted(p.name for p in save.iterdir()) == ["s0.png", "s1.png", "s2.png"]
    assert Image.open(save / "s0.png").mode == "RGB"  # PET colour carried through
    proc = _cli("evaluate", "--task", "pet_mri", "--data", str(tiny_split / "data"), "--fused", str(save), "--compare", str(tiny_split / "average"), "--metrics", "SF")
    assert proc.returncode == 0, proc.stderr
    assert "ours" in proc.stdout and "average" in proc.stdout


def test_missing_data_root_is_a_one_line_error(tmp_path):
    proc = _cli("evaluate", "--task", "ct_mri", "--data", str(tmp_path / "nowhere"), "--fused", str(tmp_path))
    assert proc.returncode == 2  # a usage error, like every other wrong path on the command line
    assert "data root not found" in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_metric_is_a_usage_error(tiny_split):
    with pytest.raises(ValueError, match="unknown metric"):
        resolve_metrics(["VIF", "Sharpness"])
    proc = _cli("evaluate", "--task", "pet_mri", "--data", str(tiny_split / "data"), "--fused", str(tiny_split / "average"), "--metrics", "Nope")
    assert proc.returncode == 2 and "unknown metric" in proc.stderr


def test_real_ct_mri_split_runs(tmp_path):
    data = shared_path("data")
    fused = tmp_path / "max"
    fused.mkdir()
    for name in ("37010", "37020"):
        a = load_grey(data / "ct_mri/test/ct" / f"{name}.png")
        b = load_grey(data / "ct_mri/test/mri" / f"{name}.png")
        Image.fromarray(np.maximum(a, b)).save(fused / f"{name}.png")
    proc = _cli("evaluate", "--task", "ct_mri", "--data", str(data), "--fused", str(fused), "--metrics", "SF,MS-SSIM", "--json")
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    assert payload["n"] == 2 and payload["mean"]["MS-SSIM"] is not None


def test_defect_figures_of_a_fused_folder(tiny_split):
    """evaluate_defects pairs like evaluate_fused_dir and gives defect_figures per image."""
    root = tiny_split / "data"
    result = evaluate_defects(root, "pet_mri", "test", tiny_split / "average")
    assert result.metrics == list(DEFECT_KEYS) and result.n == 2 and result.missing == ["s2"]
    a = load_grey(root / "pet_mri/test/mri/s1.png")
    b = load_grey(root / "pet_mri/test/pet/s1.png")
    f = load_grey(tiny_split / "average/s1.png")
    assert {k: result.per_image[1][k] for k in DEFECT_KEYS} == defect_figures(a, b, f)
    assert result.max()["grid"] == max(row["grid"] for row in result.per_image)
    assert result.median()["clip"] == pytest.approx(np.median([row["clip"] for row in result.per_image]))
    assert "median" not in evaluate_fused_dir(root, "pet_mri", "test", tiny_split / "average", ["SF"]).to_json()


def test_defect_figures_are_not_ranked():
    low = EvaluationResult("ct_mri", "test", "low", ["SF", "grid"], [{"name": "x", "SF": 1.0, "grid": 1.0}])
    high = EvaluationResult("ct_mri", "test", "high", ["SF", "grid"], [{"name": "x", "SF": 2.0, "grid": 9.0}])
    assert best_per_metric([low, high]) == {"SF": 1, "grid": None}


def test_cli_selects_defect_figures_by_name(tiny_split):
    assert resolve_metrics(["grid", "VIF", "clip"]) == ["VIF", "clip", "grid"]
    proc = _cli("evaluate", "--task", "pet_mri", "--data", str(tiny_split / "data"), "--fused", str(tiny_split / "average"), "--metrics", "grain,clip,grid")
    assert proc.returncode == 0, proc.stderr
    for key in DEFECT_KEYS:
        assert f"{key} (median / max)" in proc.stdout
    assert "VIF" not in proc.stdout and "±" not in proc.stdout


def test_defect_figures_of_real_pairs_match_the_reference_tool(tmp_path):
    """A max(A, B) folder of three ct_mri test pairs: evaluate_defects vs shared/tools/artefacts.py."""
    import importlib.util

    tool = shared_path("tools", "artefacts.py")
    data = shared_path("data")
    spec = importlib.util.spec_from_file_location("artefacts_reference", tool)
    reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)
    fused = tmp_path / "max"
    fused.mkdir()
    names = ("37003", "37010", "37020")
    for name in names:
        a = load_grey(data / "ct_mri/test/ct" / f"{name}.png")
        b = load_grey(data / "ct_mri/test/mri" / f"{name}.png")
        Image.fromarray(np.maximum(a, b)).save(fused / f"{name}.png")
    result = evaluate_defects(data, "ct_mri", "test", fused)
    assert [row["name"] for row in result.per_image] == list(names)
    for row in result.per_image:
        ref = reference.figures(*(reference.grey(p) for p in (data / "ct_mri/test/ct" / f"{row['name']}.png", data / "ct_mri/test/mri" / f"{row['name']}.png", fused / f"{row['name']}.png")))
        assert abs(row["clip"] - ref["clip"]) <= 1e-6
        assert row["grain"] == pytest.approx(ref["grain"], rel=1e-6) and row["grid"] == pytest.approx(ref["grid"], rel=1e-6)


def _evaluate(capsys, *args):
    from tests.cli.helpers import run_cli

    return run_cli(capsys, "evaluate", *args)


def test_compare_takes_several_folders_after_one_option(tiny_split, capsys):
    """The README's form `--fused a --compare b c` scores all three."""
    for name in ("b", "c"):
        (tiny_split / name).mkdir()
        for i in range(2):
            (tiny_split / name / f"s{i}.png").write_bytes((tiny_split / "average" / f"s{i}.png").read_bytes())
    data = tiny_split / "data"
    result = _evaluate(capsys, "--task", "pet_mri", "--data", data, "--fused", tiny_split / "average",
                       "--compare", tiny_split / "b", tiny_split / "c", "--metrics", "SF", "--json")
    assert result.code == 0, result.err
    assert [m["method"] for m in json.loads(result.out)["methods"]] == ["average", "b", "c"]
    stray = _evaluate(capsys, "--task", "pet_mri", "--data", data, tiny_split / "b")
    assert stray.code == 2 and "unexpected argument" in stray.err


def test_metric_names_in_any_case(tiny_split, capsys):
    assert resolve_metrics(["qabf", "sf", "ms-ssim"]) == [
        k for k in METRIC_KEYS if k in ("Qabf", "SF", "MS-SSIM")
    ]
    result = _evaluate(capsys, "--task", "pet_mri", "--data", tiny_split / "data", "--fused", tiny_split / "average",
                       "--metrics", "qabf,SF", "--json")
    assert result.code == 0, result.err
    assert list(json.loads(result.out)["mean"]) == [k for k in METRIC_KEYS if k in ("Qabf", "SF")]


def test_missing_fused_folder_fails_before_any_work(tiny_split, capsys):
    result = _evaluate(capsys, "--task", "pet_mri", "--data", tiny_split / "data", "--fused", tiny_split / "nowhere")
    assert result.code == 2 and result.error_lines == [f"error: {tiny_split / 'nowhere'}: fused-image folder not found"]


def test_montage_per_pair(tiny_split, capsys):
    """One sheet per pair every method has: sources and methods at native size, then their 4x zooms."""
    from fusionmamba_cli.imaging.io import read_image

    brighter = tiny_split / "brighter"
    brighter.mkdir()
    for i in range(2):
        pixels = np.asarray(Image.open(tiny_split / "average" / f"s{i}.png")).copy()
        pixels[20:26, 30:36] = 255  # where the two methods differ
        Image.fromarray(pixels).save(brighter / f"s{i}.png")
    out = tiny_split / "sheets"
    result = _evaluate(capsys, "--task", "pet_mri", "--data", tiny_split / "data", "--fused", tiny_split / "average",
                       "--compare", brighter, "--metrics", "SF", "--montage", out)
    assert result.code == 0, result.err
    assert sorted(p.name for p in out.iterdir()) == ["s0.png", "s1.png"]  # s2 has no fused image
    assert "montages: 2 in" in result.err and "1 pair(s) left out" in result.err
    sheet = np.asarray(Image.open(out / "s0.png").convert("RGB"))
    label, gap, height, width, side = 18, 4, 40, 48, 10
    assert sheet.shape[0] == label + height + gap + label + 4 * side
    assert sheet.shape[1] >= 4 * width + 3 * gap
    mri = np.asarray(Image.open(tiny_split / "data/pet_mri/test/mri/s0.png"))
    top_left = sheet[label : label + height, :width, 0]
    outline = np.zeros((height, width), bool)
    # The zoom window holds the whole 6x6 patch that differs; outside the red outline, pixels are native.
    zoom = sheet[label + height + gap + label :, :4 * side]
    assert zoom.shape[:2] == (4 * side, 4 * side)
    rows, cols = np.nonzero((sheet[label : label + height, :width] == [255, 0, 0]).all(axis=2))
    y0, x0, y1, x1 = rows.min(), cols.min(), rows.max(), cols.max()
    assert (y1 - y0 + 1, x1 - x0 + 1) == (side, side) and y0 <= 20 and y1 >= 25 and x0 <= 30 and x1 >= 35
    outline[y0 : y1 + 1, x0 : x1 + 1] = True
    outline[y0 + 1 : y1, x0 + 1 : x1] = False
    assert np.array_equal(top_left[~outline], mri[~outline])
    assert read_image(out / "s1.png").is_colour


def test_montage_of_our_model_alone(tiny_split, capsys, micro_weights):
    out = tiny_split / "sheets"
    result = _evaluate(capsys, "--task", "pet_mri", "--data", tiny_split / "data", "--weights", micro_weights,
                       "--device", "cpu", "--metrics", "SF", "--montage", out, "--quiet")
    assert result.code == 0, result.err
    assert sorted(p.name for p in out.iterdir()) == ["s0.png", "s1.png", "s2.png"]


def test_montage_never_writes_into_a_fused_folder(tiny_split, capsys):
    before = sorted(p.name for p in (tiny_split / "average").iterdir())
    result = _evaluate(capsys, "--task", "pet_mri", "--data", tiny_split / "data", "--fused", tiny_split / "average",
                       "--montage", tiny_split / "average")
    assert result.code == 2 and "is also a fused-image folder" in result.err
    assert sorted(p.name for p in (tiny_split / "average").iterdir()) == before


def test_window_of_largest_difference_finds_the_patch():
    from fusionmamba_cli.imaging.montage import window_of_largest_difference

    a = smooth_image(64, 80, seed=1)
    b = a.copy()
    b[40:48, 10:18] += 0.5
    window = window_of_largest_difference([a, b])
    assert window.side == 16
    assert window.y <= 40 and window.y + window.side >= 48 and window.x <= 10 and window.x + window.side >= 18
