"""Result files are written whole or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from runs.files import atomic_path, save_torch, write_json


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    write_json(target, {"val/acc": 0.5})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text('{"val/acc": 0.')
        raise RuntimeError("crash mid-write")
    assert target.read_text() == '{\n  "val/acc": 0.5\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_the_temporary_keeps_the_suffix_and_folders_are_made(tmp_path: Path) -> None:
    target = tmp_path / "media" / "grid.png"
    with atomic_path(target) as tmp:
        assert tmp.suffix == ".png" and tmp.parent == target.parent
        tmp.write_bytes(b"png")
    assert target.read_bytes() == b"png"


def test_save_torch_writes_in_the_target_folder_whatever_tmpdir_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "tmpdir"
    elsewhere.mkdir()
    monkeypatch.setenv("TMPDIR", str(elsewhere))  # node-local /tmp on clusters: another filesystem
    import torch

    target = save_torch({"w": torch.ones(3)}, tmp_path / "run" / "model.pth")
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.ones(3))
    assert not list(elsewhere.iterdir())
    assert sorted(p.name for p in target.parent.iterdir()) == ["model.pth"]
