"""`make demo`, the README's first command, end to end: v2 promoted, v3 (errors) and v4 (fast,
200 and wrong) rolled back in the shadow with no client request failed; the traffic's petal
length drifts, Drifting turns True naming input[2] first, and clears when the traffic is back;
the story printed and the timeline drawn, within its 4-minute budget."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_promotes_v2_catches_v3_and_v4_in_the_shadow_and_draws_the_timeline(
    tmp_path: Path,
) -> None:
    picture = tmp_path / "timeline.png"
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py"), "--output", str(picture)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    took = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "-> exit code 0 (0 = healthy on the new version)" in output
    assert output.count("-> exit code 1 (1 = rolled back)") == 2, output
    assert "Promoted: revision" in output
    assert "AgreementFailed: analysis failed in shadow" in output, "v4 caught by its answers"
    assert "failed while v3 and v4 were canaries: 0 " in output, "no client saw them"
    assert "with the reference file://" in output, "each good version ships its own reference"
    detected = [line for line in output.splitlines() if "! DriftDetected: " in line]
    assert len(detected) == 1, output
    assert "DriftDetected: input drift: input[2] PSI " in detected[0], "named first"
    assert output.count("* DriftCleared: no drift: ") == 1, output
    assert output.index("! DriftDetected") < output.index("* DriftCleared")
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert took < 240, f"the demo took {took:.0f} s"
