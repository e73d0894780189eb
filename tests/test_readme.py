"""README.md as a newcomer runs it.

Every shell command the README shows either runs here, as written, in the README's order,
in a scratch folder (with the repository's ``examples/`` and ``bench/`` beside it), or is
listed in :data:`NOT_RUN` with the reason; every Python snippet runs as written, after the
commands above it.  A command of a shell block sees the variables the block set before it.
Afterwards the checkout's ``git status`` is what it was: no README command writes into it.

Commands that need MNIST or Fashion-MNIST read it from ``../shared/data`` beside the
repository (``$STALESGD_DATA``); where that is absent they are left out, and the walk says so.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SHARED_DATA = ROOT.parent / "shared" / "data"

#: commands the walk does not run (matched by prefix), and why
NOT_RUN: dict[str, str] = {
    "make run": "the main job (about four minutes); the commands it is made of run below",
    "make test": "this test suite itself",
    "make bench": "the benchmarks, minutes; run on request",
    "source .venv/bin/activate": "the walk already runs inside the package's environment",
    "pip install -e examples/plugin_tanh_mlp": "`make test` installed the example plug-in",
    "stalesgd run examples/theory_linreg.toml": "about 45 s of simulation",
    "stalesgd run examples/stragglers.toml": "about a minute; tests/test_slowdown.py dry-runs "
                                             "it and runs each engine's straggler",
    "stalesgd run bench/experiments/": "a reproduction: 1.5 to 10 minutes each",
    "python bench/results_page.py": "reads the folders of the reproductions, not run here",
    "python bench/": "a benchmark script: minutes each",
    "pip install -e '.[ray]'": "`make test` installed it already",
    "ray start": "starts a cluster node; needs machines of a cluster",
    "stalesgd dist --address auto": "joins a running cluster",
    "stalesgd dist --problem logreg-synthetic --algorithm lock --workers 2 --updates 2000 "
    "--out results/ray": "with the commands after it, what examples/engines.toml (walked "
                         "above) does: ray runs, a calibration, a ps simulation",
    "RAY=$(ls -d results/ray": "(see above)",
    "stalesgd calibrate $RAY": "(see above)",
    "stalesgd sim --problem logreg-synthetic --algorithm lock --workers 8 --topology ps":
        "(see above)",
}


def readme_blocks(text: str) -> list[tuple[str, int, str]]:
    """The fenced ``sh`` and ``python`` blocks of ``text``: (language, line, code)."""
    blocks = []
    for m in re.finditer(r"^```(sh|python)\n(.*?)^```", text, flags=re.S | re.M):
        blocks.append((m.group(1), text.count("\n", 0, m.start()) + 1, m.group(2)))
    return blocks


def shell_commands(code: str) -> list[str]:
    """The commands of a shell block: continuation lines joined, blank lines dropped."""
    joined = re.sub(r"\s*\\\n\s*", " ", code)
    return [line.strip() for line in joined.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def not_run_reason(command: str) -> str | None:
    return next((why for prefix, why in NOT_RUN.items() if command.startswith(prefix)), None)


def needs_data(command: str) -> bool:
    return "mnist" in command


def test_every_shell_command_is_run_or_has_a_reason_not_to_be():
    commands = [c for lang, _, code in readme_blocks(README.read_text()) if lang == "sh"
                for c in shell_commands(code)]
    assert len(commands) > 20  # the parser sees the README's commands
    run = [c for c in commands if not_run_reason(c) is None]
    assert any(c.startswith("stalesgd real") for c in run)
    assert any(c.startswith("stalesgd sim") for c in run)
    unused = [p for p in NOT_RUN if not any(c.startswith(p) for c in commands)]
    assert unused == [], f"NOT_RUN names commands the README no longer shows: {unused}"


def test_the_block_parser_keeps_continuations_and_order():
    text = ("x\n```sh\na --b \\\n    c   # note\n# only a comment\nd\n```\n"
            "```python\nprint(1)\n```\n")
    blocks = readme_blocks(text)
    assert [(lang, line) for lang, line, _ in blocks] == [("sh", 2), ("python", 8)]
    assert shell_commands(blocks[0][2]) == ["a --b c   # note", "d"]
    assert not_run_reason("make test") and not_run_reason("stalesgd real x") is None


def _git_status() -> str | None:
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        return None
    return subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout


def test_the_readme_runs_as_written(tmp_path):
    """The walk: shell blocks (minus :data:`NOT_RUN`) and Python snippets, in order."""
    for folder in ("examples", "bench"):
        (tmp_path / folder).symlink_to(ROOT / folder)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               PYTHONUNBUFFERED="1")
    have_data = (SHARED_DATA / "mnist").is_dir() and (SHARED_DATA / "fashion-mnist").is_dir()
    if have_data:
        env["STALESGD_DATA"] = str(SHARED_DATA)
    before = _git_status()
    left_out = []
    for lang, line, code in readme_blocks(README.read_text()):
        if lang == "python":
            script = tmp_path / f"snippet_{line}.py"
            script.write_text(code)
            argv = [sys.executable, str(script)]
        else:
            keep = []
            for command in shell_commands(code):
                if not_run_reason(command) is not None:
                    continue
                if needs_data(command) and not have_data:
                    left_out.append(command)
                    continue
                keep.append(command)
            if not keep:
                continue
            argv = ["bash", "-e", "-o", "pipefail", "-c", "\n".join(keep)]
        proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, (f"README.md line {line} ({lang}) failed with exit "
                                      f"{proc.returncode}:\n{code}\n--- stdout\n"
                                      f"{proc.stdout[-3000:]}\n--- stderr\n"
                                      f"{proc.stderr[-3000:]}")
        assert "Traceback" not in proc.stderr, f"README.md line {line}:\n{proc.stderr[-3000:]}"
    assert _git_status() == before, "a README command changed the checkout"
    if left_out:
        pytest.skip(f"the walk ran without the commands that need MNIST/Fashion-MNIST "
                    f"({SHARED_DATA} is absent): {left_out}")
