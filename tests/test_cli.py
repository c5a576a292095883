import json
import re
import subprocess
import sys
from pathlib import Path

from audioflamingo.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_ask_json_on_a_synthetic_wav(make_wav, capsys):
    wav = make_wav("tone.wav", seconds=1.5, rate=22050, channels=2)
    rc = main(["ask", str(wav), "--prompt", "What do you hear?", "--model", "tiny", "--json", "--max-new-tokens", "4"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert isinstance(out["answer"], str)
    assert any("down-mixed" in w for w in out["warnings"]) and any("resampled" in w for w in out["warnings"])


def test_ask_bad_file_is_a_clear_error(tmp_path, capsys):
    rc = main(["ask", str(tmp_path / "nope.wav"), "--prompt", "x", "--model", "tiny"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "nope.wav" in err and "does not exist" in err


def test_model_info_json(capsys):
    assert main(["model-info", "--preset", "tiny", "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert set(counts) == {"total", "lm", "xattn", "transform", "encoder"}
    assert counts["total"] == counts["lm"] + counts["xattn"] + counts["transform"]


def test_console_script_runs_as_module(make_wav):
    wav = make_wav()
    r = subprocess.run([sys.executable, "-m", "audioflamingo", "ask", str(wav), "-p", "Hi", "-m", "tiny", "--max-new-tokens", "2"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, re.S)[:2]]


def test_ci_runs_exactly_the_readme_test_command():
    install_and_ask, install_and_test = readme_commands()
    assert "pytest" in install_and_test and " ask " in install_and_ask
    ci = (ROOT / ".ci/run").read_text()
    assert install_and_test in ci.splitlines()


def test_readme_main_command_runs():
    """README's first command, as a new user runs it: install (idempotent) and answer about the bundled clip."""
    install_and_ask, _ = readme_commands()
    r = subprocess.run(["bash", "-c", install_and_ask], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    answer = r.stdout.strip().splitlines()[-1]
    assert answer and not answer.startswith("audioflamingo installed")
