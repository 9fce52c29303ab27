"""Access log lines: one JSON object per request, timestamps as the server's other logs write
them, formatted in bulk off the request path."""

from __future__ import annotations

import io
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from weir_server.accesslog import AccessLog, _iso, _SecondStamp


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=4e9, allow_nan=False), min_size=1, max_size=20))
def test_timestamps_formatted_once_per_second_read_as_the_other_log_lines(
    stamps: list[float],
) -> None:
    stamp = _SecondStamp()
    assert [stamp.iso(ts) for ts in stamps] == [_iso(ts) for ts in stamps]


def test_the_fraction_rounds_up_into_the_next_second_like_datetime() -> None:
    stamp = _SecondStamp()
    for ts in (1796190498.9999996, 1796190498.5589998, 1796190499.0, 0.0):
        assert stamp.iso(ts) == _iso(ts)
    assert stamp.iso(1796190498.9999996).endswith(":19.000Z")


def test_each_recorded_request_becomes_one_json_line() -> None:
    out = io.StringIO()
    log = AccessLog(stream=out)
    log.record((1796190498.25, "POST", '/v2/models/"odd"/infer', 200, 0.0012345, "127.0.0.1:5"))
    log.record((1796190499.5, "GET", "/v2/health/ready", 503, 0.0001, ""))
    log._flush()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines == [
        {
            "ts": "2026-12-02T05:48:18.250Z",
            "level": "info",
            "logger": "weir.access",
            "method": "POST",
            "path": '/v2/models/"odd"/infer',
            "status": 200,
            "duration_ms": 1.234,
            "client": "127.0.0.1:5",
        },
        {
            "ts": "2026-12-02T05:48:19.500Z",
            "level": "info",
            "logger": "weir.access",
            "method": "GET",
            "path": "/v2/health/ready",
            "status": 503,
            "duration_ms": 0.1,
            "client": "",
        },
    ]
