"""`download-weights` / `weights list` with the real huggingface_hub client against a Hub on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fusionmamba_cli.checkpoints import hub, load_model, resolve_weights
from fusionmamba_cli.cli.app import app
from fusionmamba_cli.errors import WeightsDownloadError, WeightsFormatError, WeightsNotFoundError

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture
def setup(fake_hub, hub_env, weights_dir, micro_blobs):
    """Repo `main`: micro.safetensors (blob 0), bad.safetensors, model.pth; tag `v1`: micro.safetensors (blob 1).

    Manifest: `micro` (main's file), `micro-v1` (v1's file, no pinned revision), `micro-pinned` (v1's file,
    revision pinned in the manifest), `corrupt` (bad.safetensors, whose served bytes are not the manifest's),
    `legacy` (a .pth), `micro-bundled` (in the weights folder only).
    """
    main, v1, other = micro_blobs
    fake_hub.add("main", {"micro.safetensors": main, "bad.safetensors": main[:-7] + b"garbage", "model.pth": main})
    fake_hub.add("v1", {"micro.safetensors": v1})
    hub_env.point(fake_hub.url)
    weights_dir.add("micro", "micro.safetensors", main)
    weights_dir.add("micro-v1", "micro.safetensors", v1)
    weights_dir.add("micro-pinned", "micro.safetensors", v1, revision="v1")
    weights_dir.add("corrupt", "bad.safetensors", main)
    weights_dir.add("legacy", "model.pth", main)
    weights_dir.add("micro-bundled", "micro-bundled.safetensors", other, bundled=True, tasks=("ct_mri",))
    return fake_hub, hub_env, weights_dir, micro_blobs


def _download(*args: str):
    return runner.invoke(app, ["download-weights", *args])


def _snapshot_files(cache: Path, name: str) -> list[Path]:
    return sorted(cache.glob(f"models--*/snapshots/*/{name}"))


def test_download_lands_in_the_cache_verified_and_second_call_makes_no_traffic(setup):
    fake_hub, env, _, (main, _, _) = setup
    result = _download("micro", "--json")
    assert result.exit_code == 0, result.output
    [item] = json.loads(result.stdout)
    path = Path(item["path"])
    assert item["status"] == "downloaded"
    assert path.read_bytes() == main
    assert path == env.cache / "models--test-org--fusionmamba-test" / "snapshots" / fake_hub.commit("main") / "micro.safetensors"
    assert fake_hub.downloads() == ["/test-org/fusionmamba-test/resolve/main/micro.safetensors"]
    assert ("HEAD", "/test-org/fusionmamba-test/resolve/main/micro.safetensors") in fake_hub.requests

    seen = len(fake_hub.requests)
    again = _download("micro", "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)[0] == {**item, "status": "cached"}
    assert len(fake_hub.requests) == seen  # verified from the cache: no traffic at all
    assert resolve_weights("micro") == path  # --weights NAME finds the download
    assert load_model("micro").config.dims == (8, 16)

    forced = _download("micro", "--force", "--json")
    assert forced.exit_code == 0, forced.output
    assert json.loads(forced.stdout)[0]["status"] == "downloaded" and len(fake_hub.downloads()) == 2


def test_damaged_cached_copy_is_not_used_and_is_fetched_again(setup):
    fake_hub, _, _, (main, _, _) = setup
    [path] = hub.download_weights(["micro"])
    path.resolve().chmod(0o644)
    path.resolve().write_bytes(main[:-1] + b"x")  # bit rot in the cache
    entry = hub.manifest_entries(["micro"])[0]
    assert hub.find_cached(entry) is None
    with pytest.raises(WeightsNotFoundError, match="download-weights micro"):
        resolve_weights("micro")
    [item] = hub.fetch_weights(["micro"])
    assert item.status == "downloaded" and item.path.read_bytes() == main
    assert len(fake_hub.downloads()) == 2


def test_corrupted_file_is_deleted_and_fails(setup):
    fake_hub, env, _, _ = setup
    result = _download("corrupt")
    assert result.exit_code == 1
    assert isinstance(result.exception, WeightsFormatError)
    assert "sha256" in str(result.exception) and "deleted" in str(result.exception)
    assert fake_hub.downloads()  # it was fetched ...
    assert _snapshot_files(env.cache, "bad.safetensors") == []  # ... and removed, pointer and blob
    assert not any(p.is_file() for p in env.cache.glob("models--*/blobs/*"))
    with pytest.raises(WeightsNotFoundError, match="download-weights corrupt"):
        resolve_weights("corrupt")


def test_revision_picks_the_right_file(setup):
    fake_hub, env, _, (main, v1, _) = setup
    result = _download("micro-v1", "--revision", "v1", "--json")
    assert result.exit_code == 0, result.output
    path = Path(json.loads(result.stdout)[0]["path"])
    assert path.read_bytes() == v1
    assert path.parent.name == fake_hub.commit("v1")
    assert fake_hub.downloads() == ["/test-org/fusionmamba-test/resolve/v1/micro.safetensors"]
    # Another revision's file for the same name is a mismatch: rejected, and the v1 copy is untouched.
    wrong = _download("micro-v1", "--revision", "main")
    assert wrong.exit_code == 1 and isinstance(wrong.exception, WeightsFormatError)
    assert path.read_bytes() == v1
    assert resolve_weights("micro-v1") == path  # found at whatever revision it was downloaded


def test_revision_pinned_in_the_manifest(setup):
    fake_hub, _, _, (_, v1, _) = setup
    [path] = hub.download_weights(["micro-pinned"])
    assert path.read_bytes() == v1 and path.parent.name == fake_hub.commit("v1")
    assert hub.find_cached(hub.manifest_entries(["micro-pinned"])[0]) == path


def test_unknown_revision_repo_and_non_safetensors_are_clear_errors(setup):
    fake_hub, _, _, _ = setup
    with pytest.raises(WeightsNotFoundError, match="revision 'nope' not found"):
        hub.download_weights(["micro"], revision="nope")
    with pytest.raises(WeightsNotFoundError, match="repository 'someone/else' not found"):
        hub.download_weights(["micro"], repo_id="someone/else")
    with pytest.raises(WeightsFormatError, match="only .safetensors"):
        hub.download_weights(["legacy"])
    with pytest.raises(WeightsNotFoundError, match="unknown weights name 'nothing'.*micro"):
        hub.download_weights(["nothing"])
    assert fake_hub.downloads() == []


def test_cache_dir_option(setup, tmp_path):
    fake_hub, env, _, (main, _, _) = setup
    other = tmp_path / "elsewhere"
    result = _download("micro", "--cache-dir", str(other), "--json")
    assert result.exit_code == 0, result.output
    assert Path(json.loads(result.stdout)[0]["path"]).is_relative_to(other)
    assert _snapshot_files(env.cache, "micro.safetensors") == []
    assert hub.find_cached(hub.manifest_entries(["micro"])[0], cache_dir=other).read_bytes() == main


def test_all_downloads_every_entry_not_bundled(setup):
    fake_hub, _, weights_dir, _ = setup
    weights_dir.entries = [e for e in weights_dir.entries if e["name"] in ("micro", "micro-pinned", "micro-bundled")]
    weights_dir.write()
    result = _download("--all", "--json")
    assert result.exit_code == 0, result.output
    assert {item["name"]: item["status"] for item in json.loads(result.stdout)} == {"micro": "downloaded", "micro-pinned": "downloaded"}
    bundled = _download("micro-bundled", "--json")
    assert json.loads(bundled.stdout)[0]["status"] == "bundled"


def test_weights_list_shows_where_each_is(setup):
    fake_hub, _, weights_dir, _ = setup
    hub.download_weights(["micro"])
    result = runner.invoke(app, ["weights", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["micro"]["where"] == "cached"
    assert rows["micro-bundled"]["where"] == "bundled" and rows["micro-bundled"]["tasks"] == ["ct_mri"]
    assert rows["micro-v1"]["where"] == "remote-only"  # same file name, other content: not this one
    assert rows["micro"]["size"] == len(setup[3][0])
    (weights_dir.path / "micro-bundled.safetensors").write_bytes(b"tampered")
    table = runner.invoke(app, ["weights", "list"])
    assert table.exit_code == 0, table.output
    for text in ("micro-bundled", "corrupt", "cached", "remote-only", "ct_mri"):
        assert text in table.stdout


def test_offline_mode_uses_the_cache_and_fails_clearly_otherwise(setup):
    fake_hub, env, _, (main, _, _) = setup
    hub.download_weights(["micro"])
    seen = len(fake_hub.requests)
    env.offline()
    assert hub.download_weights(["micro"])[0].read_bytes() == main
    with pytest.raises(WeightsDownloadError, match="HF_HUB_OFFLINE"):
        hub.download_weights(["micro-pinned"])
    assert len(fake_hub.requests) == seen


def test_unreachable_endpoint_fails_fast_and_bundled_weights_still_work(setup, closed_url, silent_url, monkeypatch):
    _, env, _, _ = setup
    env.point(closed_url)
    started = time.monotonic()
    with pytest.raises(WeightsDownloadError, match="cannot reach"):
        hub.download_weights(["micro"])
    assert time.monotonic() - started < 3
    assert load_model("micro-bundled").config.dims == (8, 16)
    assert hub.download_weights(["micro-bundled"])[0].name == "micro-bundled.safetensors"

    env.point(silent_url)  # accepts, never answers: the metadata timeout ends it
    monkeypatch.setattr(hub, "ETAG_TIMEOUT", 0.5)
    started = time.monotonic()
    with pytest.raises(WeightsDownloadError, match="cannot reach"):
        hub.download_weights(["micro"])
    assert time.monotonic() - started < 3


def test_unreachable_endpoint_cli_exit_code(setup, closed_url, tmp_path):
    _, env, weights_dir, _ = setup
    environ = {
        **os.environ, "HF_ENDPOINT": closed_url, "HF_HUB_CACHE": str(env.cache), "PYTHONPATH": str(REPO),
        "FUSIONMAMBA_WEIGHTS_DIR": str(weights_dir.path), "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
    }
    environ.pop("FUSIONMAMBA_DEBUG", None)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "fusionmamba_cli", "download-weights", "micro"],
        env=environ, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 1, done.stderr
    assert "cannot reach" in done.stderr and closed_url in done.stderr
    assert "Traceback" not in done.stderr
    assert elapsed < 60  # mostly the interpreter and torch import; the network part fails at once
