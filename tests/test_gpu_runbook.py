"""`benchmarks/gpu.sh`, the GPU runbook: its command line, without a GPU.

The stages themselves run at the tiny size in tests/test_benchmarks.py.
"""

import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "gpu.sh")

pytestmark = [pytest.mark.once, pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")]


def run(*args, env=None):
    return subprocess.run(
        ["bash", SCRIPT, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120
    )


def stages():
    """The stages the script knows, from its STAGES line."""
    with open(SCRIPT, encoding="utf-8") as f:
        match = re.search(r"^STAGES=\(([^)]*)\)", f.read(), re.MULTILINE)
    return match.group(1).split()


def test_help_names_every_stage_and_option():
    result = run("--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: bash benchmarks/gpu.sh --out DIR")
    for word in [*stages(), "--out", "--sizes", "--tmp-dir", "--python", "--install", "--cpu"]:
        assert re.search(rf"^\s+{re.escape(word)}\b", result.stdout, re.MULTILINE), word


def test_the_performance_page_lists_the_stages():
    with open(os.path.join(ROOT, "docs", "performance.md"), encoding="utf-8") as f:
        page = f.read()
    for stage in stages():
        assert f"| `{stage}` |" in page, f"docs/performance.md does not describe {stage}"


@pytest.mark.parametrize(
    "args, message",
    [
        ((), "--out DIR is required"),
        (("similarity",), "--out DIR is required"),
        (("--out",), "--out needs a value"),
        (("--out", "{tmp}", "similarity", "bogus"), "unknown stage: bogus"),
        (("--out", "{tmp}", "--sizes", "2k"), "unknown size: 2k"),
        (("--out", "{tmp}", "--fast"), "unknown option: --fast"),
    ],
)
def test_a_wrong_command_line_is_refused(tmp_path, args, message):
    result = run(*(a.format(tmp=tmp_path) for a in args))
    assert result.returncode == 2
    assert f"gpu.sh: error: {message}" in result.stderr
    assert result.stdout == ""
    assert not list(tmp_path.iterdir()), "nothing is written before the command line is checked"


def test_no_gpu_is_a_clear_error(tmp_path):
    # An nvidia-smi that finds no device, first on the PATH.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'No devices were found'\nexit 6\n")
    fake.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    result = run("--out", str(tmp_path / "out"), "--python", sys.executable, "similarity", env=env)
    assert result.returncode == 3
    assert "gpu.sh: error: no NVIDIA GPU found" in result.stderr
    assert "No devices were found" in result.stderr
    assert not (tmp_path / "out" / "similarity.txt").exists()


def test_a_missing_package_is_named(tmp_path):
    # A `jax` that fails to import, ahead of the real one.
    shadow = tmp_path / "shadow" / "jax"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named jax')\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "shadow"))
    result = run("--out", str(tmp_path / "out"), "--python", sys.executable, "--cpu", env=env)
    assert result.returncode == 3
    assert "the Python package 'jax' cannot be imported" in result.stderr
    assert "--install" in result.stderr
