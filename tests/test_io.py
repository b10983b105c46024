"""qnn_torch.io (and the figures of qnn_torch.experiments.plotting): outputs are replaced
whole or left as they were, and a run's earlier outputs are cleared before it starts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from qnn_torch.experiments.plotting import blank_figure, savefig_atomic
from qnn_torch.io import atomic_path, clear_outputs, save_atomic, write_atomic


def test_atomic_outputs_replace_whole_files_or_leave_the_old_ones(tmp_path: Path) -> None:
    write_atomic(tmp_path / "a" / "results.json", '{"x": 1}\n')
    save_atomic(torch.arange(3), tmp_path / "w.pt")
    savefig_atomic(blank_figure((2.0, 2.0)), tmp_path / "figure.png")
    assert (tmp_path / "a" / "results.json").read_text() == '{"x": 1}\n'
    assert torch.equal(torch.load(tmp_path / "w.pt", weights_only=True), torch.arange(3))
    assert (tmp_path / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    old = tmp_path / "w.pt"
    with pytest.raises(RuntimeError), atomic_path(old) as temp:
        temp.write_bytes(b"partial")
        raise RuntimeError("interrupted")
    assert torch.equal(torch.load(old, weights_only=True), torch.arange(3))
    assert not list(tmp_path.rglob(".*.tmp"))


def test_clear_outputs_removes_the_named_files_and_folders_only(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text("{}")
    (tmp_path / "logs" / "twin").mkdir(parents=True)
    (tmp_path / "logs" / "twin" / "metrics.csv").write_text("epoch\n")
    (tmp_path / "mine.txt").write_text("kept")
    outside = tmp_path.parent / f"{tmp_path.name}_target"
    outside.mkdir()
    (outside / "kept.txt").write_text("kept")
    (tmp_path / "checkpoints").symlink_to(outside, target_is_directory=True)
    names = ("results.json", "logs", "checkpoints", "absent.png")
    clear_outputs(tmp_path, names)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["mine.txt"]
    assert (outside / "kept.txt").read_text() == "kept"  # a link is removed, not followed
    clear_outputs(tmp_path, names)  # nothing left to remove: no error
    assert (tmp_path / "mine.txt").read_text() == "kept"
