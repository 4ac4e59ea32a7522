"""One Settings for every process: bad values fail fast and name the setting."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gpt4video.settings import SettingsError, load_settings


def test_bad_values_name_each_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "http://nope")
    monkeypatch.setenv("API_PORT", "99999")
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert "REDIS_URL" in message and "API_PORT" in message


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEYS", " a , b,,")
    monkeypatch.setenv("LLM_MAX_BATCH", "3")
    settings = load_settings()
    assert settings.api_key_set == frozenset({"a", "b"})
    assert settings.llm_max_batch == 3


@pytest.mark.parametrize("command", ["api", "llm-worker", "t2v-worker"])
def test_processes_refuse_to_start_with_a_bad_setting(command: str) -> None:
    env = {"REDIS_URL": "ftp://x", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "gpt4video.cli", command], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "REDIS_URL" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_lists_commands_and_rejects_unknown() -> None:
    listing = subprocess.run([sys.executable, "-m", "gpt4video.cli", "--help"], capture_output=True, text=True)
    assert listing.returncode == 0 and "llm-worker" in listing.stdout and "eval safety" in listing.stdout
    unknown = subprocess.run([sys.executable, "-m", "gpt4video.cli", "frobnicate"], capture_output=True, text=True)
    assert unknown.returncode == 2 and "unknown command" in unknown.stderr
