"""A bad config fails with one line naming the YAML path, exit code 2, before any work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from refine.errors import ConfigError
from refine.pipeline.config import expand_env, load_config

GOOD = """
input: ["{warc}"]
output: {out}
stages:
  - read: {{slice_mb: 1}}
  - extract: {{engine: resiliparse, timeout: 5}}
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


@pytest.fixture
def warc(tmp_path: Path) -> Path:
    from warcgen import record, write_warc

    path = tmp_path / "a.warc.gz"
    write_warc(path, [record("response", "http://a.example/", b"<html><body>hi</body></html>")])
    return path


def test_good_config_loads(tmp_path, warc):
    cfg = load_config(write(tmp_path, GOOD.format(warc=warc, out=tmp_path / "o")))
    assert cfg.stages[1] == {"extract": {"engine": "resiliparse", "timeout": 5}}
    assert cfg.input == [str(warc)]


@pytest.mark.parametrize(
    "body, expected",
    [
        ("stages:\n  - read: {}\n  - extrakt: {}\n", "stages[1]: unknown stage 'extrakt'"),
        ("stages:\n  - read: {slice_mb: 1, colour: red}\n", "stages[0].read.colour: unknown key"),
        ("stages:\n  - read: {}\n  - extract: {timeout: soon}\n", "stages[1].extract.timeout:"),
        ("stages:\n  - read: {slice_mb: -1}\n", "stages[0].read.slice_mb: Input should be greater"),
        ("stages:\n  - extract: {}\n", "stages[0]: the first stage must read input"),
        ("stages:\n  - read: {}\n  - read: {}\n", "stages[1]: stage 'read' appears twice"),
        ("colour: red\nstages:\n  - read: {}\n", "colour: unknown key"),
        ("cluster: {workers: many}\nstages:\n  - read: {}\n", "cluster.workers:"),
        ("stages: [read: {}\n", "not valid YAML"),
    ],
)
def test_bad_config_names_the_yaml_path(tmp_path, warc, body, expected):
    text = f"input: ['{warc}']\noutput: {tmp_path / 'o'}\n" + body
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    assert expected in str(e.value)
    assert "\n" not in str(e.value)


def test_env_defaults():
    assert expand_env("${REFINE_SURELY_UNSET_VAR:-../x}/warc") == "../x/warc"
    with pytest.raises(ConfigError, match="REFINE_SURELY_UNSET_VAR"):
        expand_env("${REFINE_SURELY_UNSET_VAR}/warc")


def test_config_remembers_what_env_expansion_changed(tmp_path, warc, monkeypatch):
    """report.json keeps these (``config_env``): `refine push` publishes them, not the values."""
    monkeypatch.setenv("REFINE_TEST_WARC_DIR", str(warc.parent))
    text = GOOD.format(warc="${REFINE_TEST_WARC_DIR}/a.warc.gz", out=tmp_path / "o").replace(
        "engine: resiliparse", "engine: '${REFINE_SURELY_UNSET_VAR:-resiliparse}'"
    )
    cfg = load_config(write(tmp_path, text))
    assert cfg.input == [str(warc)]
    assert cfg.as_written == [
        {"at": ["input", 0], "written": "${REFINE_TEST_WARC_DIR}/a.warc.gz"},
        {
            "at": ["stages", 1, "extract", "engine"],
            "written": "${REFINE_SURELY_UNSET_VAR:-resiliparse}",
        },
    ]
    plain = load_config(write(tmp_path, GOOD.format(warc=warc, out=tmp_path / "o")))
    assert plain.as_written == []


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "refine.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


@pytest.mark.parametrize(
    "body, expected",
    [
        ("stages:\n  - read: {}\n  - sparkle: {}\n", "unknown stage 'sparkle'"),
        ("stages:\n  - read: {}\n  - extract: {engine: no_such_mod:f}\n", "no_such_mod"),
    ],
)
def test_cli_bad_config_exits_2_with_one_line_and_no_work(tmp_path, warc, body, expected):
    out = tmp_path / "o"
    cfg = write(tmp_path, f"input: ['{warc}']\noutput: {out}\n" + body)
    r = run_cli("run", str(cfg))
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists()


def test_cli_missing_input_exits_2_before_work(tmp_path):
    out = tmp_path / "o"
    missing = tmp_path / "nope.warc.gz"
    cfg = write(tmp_path, f"input: ['{missing}']\noutput: {out}\nstages:\n  - read: {{}}\n")
    r = run_cli("run", str(cfg))
    assert r.returncode == 2
    assert r.stderr == f"refine: error: {cfg}: input {str(missing)!r}: no such file or directory\n"
    assert not out.exists()


def test_cli_glob_matching_nothing_names_the_config_and_pattern(tmp_path):
    cfg = write(
        tmp_path, f"input: ['{tmp_path}/*.warc.gz']\noutput: {tmp_path}/o\nstages: [read]\n"
    )
    r = run_cli("run", str(cfg))
    assert r.returncode == 2
    assert r.stderr == f"refine: error: {cfg}: input '{tmp_path}/*.warc.gz' matched no files\n"


def test_cli_missing_input_from_the_command_line_says_so_and_where_it_looked(tmp_path):
    """A relative --input is looked up from the current directory: the line says which."""
    cfg = write(tmp_path, f"input: [a.jsonl]\noutput: {tmp_path}/o\nstages: [read]\n")
    r = run_cli("run", str(cfg), "--input", "nope/*.jsonl", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr == (
        f"refine: error: {cfg} with --input: input 'nope/*.jsonl' matched no files "
        f"(relative to the current directory {tmp_path.resolve()})\n"
    )


def test_cli_missing_config_file(tmp_path):
    r = run_cli("run", str(tmp_path / "nope.yaml"))
    assert r.returncode == 2 and "config file not found" in r.stderr


def test_every_shipped_config_is_valid(monkeypatch, tmp_path):
    """configs/*.yaml parse and validate (their runs are exercised in test_pipeline)."""
    configs = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))
    assert configs
    monkeypatch.setenv("REFINE_TEST_DATA", str(tmp_path))
    for path in configs:
        cfg = load_config(path)
        assert cfg.stages and cfg.output
