"""The heartbeat and `sesguard health`: fresh -> 0, stale or missing -> 1, one line each.

Ages are set with os.utime and judged against an explicit `now`: no wall-clock asserts.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from sesguard.runtime.health import check, status, touch_heartbeat


def _beat_at(path: Path, mtime: float) -> None:
    touch_heartbeat(path)
    os.utime(path, (mtime, mtime))


def test_touch_creates_then_refreshes(tmp_path: Path) -> None:
    path = tmp_path / "run" / "heartbeat"
    touch_heartbeat(path)
    assert path.exists()
    os.utime(path, (1000.0, 1000.0))
    touch_heartbeat(path)
    assert path.stat().st_mtime > 1000.0


def test_touch_never_raises(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    touch_heartbeat(blocker / "heartbeat")  # parent is a file: logged, not raised
    assert not (blocker / "heartbeat").exists()


def test_fresh_is_healthy(tmp_path: Path) -> None:
    path = tmp_path / "hb"
    _beat_at(path, 10_000.0)
    out = io.StringIO()
    assert check(path, 90, now=10_030.0, out=out) == 0
    assert out.getvalue().startswith("healthy: heartbeat 30.0s old")
    assert out.getvalue().count("\n") == 1


def test_stale_is_unhealthy(tmp_path: Path) -> None:
    path = tmp_path / "hb"
    _beat_at(path, 10_000.0)
    out = io.StringIO()
    assert check(path, 90, now=10_091.0, out=out) == 1
    assert out.getvalue() == f"unhealthy: heartbeat 91s old (max 90s) at {path}\n"


def test_boundary_and_future_beats(tmp_path: Path) -> None:
    path = tmp_path / "hb"
    _beat_at(path, 10_000.0)
    assert status(path, 90, now=10_090.0)[0] is True
    assert status(path, 90, now=9_000.0)[0] is True  # clock stepped back


def test_missing_is_unhealthy(tmp_path: Path) -> None:
    out = io.StringIO()
    assert check(tmp_path / "nope", 90, out=out) == 1
    assert out.getvalue().startswith("unhealthy: no heartbeat at ")


def test_bad_max_age(tmp_path: Path) -> None:
    path = tmp_path / "hb"
    touch_heartbeat(path)
    for bad in (0, -5, float("nan")):
        out = io.StringIO()
        assert check(path, bad, out=out) == 2
        assert out.getvalue().startswith("invalid max age")


def test_unreadable_path_is_unhealthy(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    ok, message = status(blocker / "hb", 90)
    assert not ok
    assert message.startswith("unhealthy:")


def test_sesguard_health_command(tmp_path: Path) -> None:
    """The HEALTHCHECK's own command line, against the heartbeat setting."""
    path = tmp_path / "hb"
    env = {**os.environ, "SESGUARD_HEARTBEAT_FILE": str(path)}
    cmd = [str(Path(sys.executable).parent / "sesguard"), "health"]
    missing = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1, missing.stderr
    assert missing.stdout.startswith("unhealthy: no heartbeat")
    touch_heartbeat(path)
    fresh = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=60)
    assert fresh.returncode == 0, fresh.stderr
    assert fresh.stdout.startswith("healthy:")
