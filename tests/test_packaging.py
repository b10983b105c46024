"""The package's shape: ``import qnn_torch`` stays light (no figures, no command lines),
only qnn_torch.experiments draws or parses, and the package is typed and versioned."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import qnn_torch

PACKAGE = Path(qnn_torch.__file__).resolve().parent
# (argparse itself is imported by torch, so only the source is checked for it.)
HEAVY = ("matplotlib", "jsonargparse", "qnn_torch.experiments")


def test_importing_qnn_torch_imports_no_figures_nor_command_lines() -> None:
    code = (
        "import sys, json, qnn_torch; "
        f"print(json.dumps([name for name in {list(HEAVY)!r} if name in sys.modules]))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert json.loads(run.stdout) == []


def test_only_the_experiments_parse_command_lines_or_draw() -> None:
    experiments = PACKAGE / "experiments"
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in sorted(PACKAGE.rglob("*.py"))
        if experiments not in path.parents
        and re.search(r"^\s*(import|from) argparse\b|matplotlib", path.read_text(), re.MULTILINE)
    ]
    assert offenders == []
    assert (experiments / "cli.py").is_file() and (experiments / "plotting.py").is_file()


def test_the_package_is_typed_and_versioned() -> None:
    assert isinstance(qnn_torch.__version__, str)
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", qnn_torch.__version__)
    assert (PACKAGE / "py.typed").is_file()
