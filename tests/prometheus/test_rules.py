"""The chart's PrometheusRule, checked by Prometheus' own tool: `promtool check rules` accepts
the rules `helm template` renders (with the default values and with others), and `promtool test
rules` runs tests/prometheus/alerts.test.yaml against them, where every alert of the chart has
a case in which it fires (with the labels and annotations a person receives) and one in which
it stays quiet. A new alert without both fails here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.prometheus.conftest import LIVE_RULE_VALUES, render_rule
from tests.support.prometheus import promtool

UNIT_TESTS = Path(__file__).with_name("alerts.test.yaml")


def write_rules(rule: dict[str, Any], folder: Path) -> Path:
    """The PrometheusRule's groups as a Prometheus rule file (what prometheus-operator mounts)."""
    path = folder / "weir-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    return path


def alerts_of(rule: dict[str, Any]) -> set[str]:
    return {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}


def unit_tests() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(UNIT_TESTS.read_text())
    return document


class TestPromtoolCheckRules:
    @pytest.mark.parametrize(
        "sets",
        [
            (),
            LIVE_RULE_VALUES,
            (
                "prometheusRule.driftWindow=1h",
                "prometheusRule.driftThreshold=0.1",
                "prometheusRule.confidenceDrop=0.25",
                "prometheusRule.errorRateThreshold=0.2",
                "prometheusRule.alertLabels.team=ml",
                "fullnameOverride=platform-weir",
            ),
        ],
        ids=["defaults", "this-tier", "overridden"],
    )
    def test_accepts_the_rendered_rules(self, sets: tuple[str, ...], tmp_path: Path) -> None:
        rule = render_rule(*sets)
        checked = promtool("check", "rules", str(write_rules(rule, tmp_path)))
        assert checked.returncode == 0, checked.stdout + checked.stderr
        rules = sum(len(g["rules"]) for g in rule["spec"]["groups"])
        assert f"SUCCESS: {rules} rules found" in checked.stdout

    def test_rejects_a_broken_expression(self, chart_rule: dict[str, Any], tmp_path: Path) -> None:
        """So that the check above bites: one parenthesis missing fails it."""
        broken = yaml.safe_load(yaml.safe_dump(chart_rule))
        broken["spec"]["groups"][0]["rules"][0]["expr"] += ")"
        checked = promtool("check", "rules", str(write_rules(broken, tmp_path)))
        assert checked.returncode != 0
        assert "parse error" in checked.stdout + checked.stderr


class TestPromtoolTestRules:
    def test_every_case_passes(self, chart_rule: dict[str, Any], tmp_path: Path) -> None:
        rules = write_rules(chart_rule, tmp_path)
        cases = unit_tests()
        cases["rule_files"] = [rules.name]
        (tmp_path / "alerts.test.yaml").write_text(yaml.safe_dump(cases, sort_keys=False))
        tested = promtool("test", "rules", str(tmp_path / "alerts.test.yaml"), timeout=120)
        assert tested.returncode == 0, tested.stdout + tested.stderr
        assert "SUCCESS" in tested.stdout + tested.stderr

    def test_every_alert_of_the_chart_has_a_firing_and_a_quiet_case(
        self, chart_rule: dict[str, Any]
    ) -> None:
        firing: set[str] = set()
        quiet: set[str] = set()
        for case in unit_tests()["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
        alerts = alerts_of(chart_rule)
        assert alerts, "the chart has no alerts?"
        assert not alerts - firing, f"no case where these fire: {sorted(alerts - firing)}"
        assert not alerts - quiet, f"no case where these stay quiet: {sorted(alerts - quiet)}"
        assert firing | quiet <= alerts, (
            f"cases for alerts the chart lacks: {(firing | quiet) - alerts}"
        )

    def test_the_firing_cases_check_what_a_person_receives(self) -> None:
        for case in unit_tests()["tests"]:
            for check in case.get("alert_rule_test", []):
                for alert in check.get("exp_alerts") or []:
                    where = f"{case['name']}: {check['alertname']}"
                    assert alert["exp_labels"].get("severity") in {"warning", "critical"}, where
                    annotations = alert.get("exp_annotations") or {}
                    assert set(annotations) == {"summary", "description", "runbook_url"}, where
                    assert annotations["runbook_url"].endswith("#" + check["alertname"].lower())
