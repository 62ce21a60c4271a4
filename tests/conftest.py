"""Shared fixtures: real stores in temporary directories, and fresh interpreters."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import persistmemo._secret
import persistmemo.stores.disk
import persistmemo.stores.registry
from persistmemo import Store

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A real diskcache-backed store in a fresh directory."""
    with Store(tmp_path / "store") as opened:
        yield opened


@pytest.fixture(autouse=True)
def _isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test touches the user's real default store, or inherits the switch."""
    monkeypatch.setenv("PERSISTMEMO_DIR", str(tmp_path / "default-store"))
    monkeypatch.delenv("PERSISTMEMO_DISABLE", raising=False)
    monkeypatch.delenv("PERSISTMEMO_SECRET", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    persistmemo._secret.forget_cached_secrets()
    # The default store resolves its directory once per process: give each test its own.
    monkeypatch.setattr(persistmemo.stores.registry, "_default_store", None)


def run_python(
    code: str,
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter; fail the test with its stderr if it fails."""
    full_env = {**os.environ, **(env or {})}
    paths = [str(REPO / "tests"), full_env.get("PYTHONPATH", "")]
    if cwd is not None:
        paths.insert(0, str(cwd))
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"subprocess failed:\n{result.stderr}"
    return result


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real redis-server for the session (skips with a message when not installed)."""
    from redis_server import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.kill()


@pytest.fixture
def redis_url(redis_server: object) -> str:
    """The session server, emptied for this test."""
    server = redis_server
    server.flush()  # type: ignore[attr-defined]
    return str(server.url)  # type: ignore[attr-defined]


# What the other user must be able to run: this Python version (a pyenv build whose own
# libpython that user cannot reach loads the system's, which may be another), with persistmemo.
_SAME_PYTHON_WITH_PERSISTMEMO = (
    f"import sys; assert sys.version_info[:2] == {tuple(sys.version_info[:2])!r}, sys.version; "
    "import persistmemo.stores, msgpack, diskcache"
)


@functools.cache
def why_user_cannot_run_python(uid: int, gid: int) -> str | None:
    """Why user ``uid`` cannot run this interpreter with persistmemo and its dependencies, or
    None when it can. A pyenv under /root, or a venv linked to one, is out of other users'
    reach: the tests that act as another user skip there, saying so."""
    done = subprocess.run(
        [
            *("setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"),
            *(sys.executable, "-c", _SAME_PYTHON_WITH_PERSISTMEMO),
        ],
        cwd="/",
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO / "src")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode == 0:
        return None
    last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
    return f"user {uid} cannot run {sys.executable} with persistmemo ({last})"


def skip_unless_user_can_run_python(uid: int = 65534, gid: int = 65534) -> None:
    """Skip the test when user ``uid`` cannot run this interpreter (see above)."""
    reason = why_user_cannot_run_python(uid, gid)
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
def nobody_runs_python() -> None:
    """Skip unless root can act as user 65534 (setpriv), and that user can run Python here."""
    if not (hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("setpriv")):
        pytest.skip("needs root and setpriv(1) to act as another user")
    skip_unless_user_can_run_python()


@pytest.fixture
def lease_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Disk stores claim keys with lease rows, as where record locks do not exist (Windows)."""
    monkeypatch.setattr(persistmemo.stores.disk.DiskBackend, "offers_key_claims", False)
