"""`make demo`, the README's first command, end to end: v2 promoted, v3 rolled back by itself,
the story printed and the timeline drawn, in well under its 3-minute budget."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_promotes_v2_rolls_back_v3_and_draws_the_timeline(tmp_path: Path) -> None:
    picture = tmp_path / "timeline.png"
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py"), "--output", str(picture)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    took = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "-> exit code 0 (0 = healthy on the new version)" in output
    assert "-> exit code 1 (1 = rolled back)" in output
    assert "Promoted: revision" in output
    assert "RolledBack: canary" in output
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert took < 180, f"the demo took {took:.0f} s"
