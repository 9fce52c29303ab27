"""The operator's metrics, as a specification: phase, weight and which revision holds which
track, with no stale series once a revision stops serving or the object is deleted."""

from __future__ import annotations

from prometheus_client import generate_latest

from weir_operator.cluster.metrics import OperatorMetrics
from weir_operator.core.spec import Dataset, Lineage
from weir_operator.core.status import (
    CanaryStatus,
    ConfidenceDrift,
    DriftStatus,
    FeatureScore,
    ModelDeploymentStatus,
    PredictionDrift,
    RevisionRef,
)


def scrape(metrics: OperatorMetrics) -> str:
    return generate_latest(metrics.registry).decode()


def test_revision_info_names_the_revision_of_each_track_and_forgets_the_ones_gone() -> None:
    metrics = OperatorMetrics()
    stable = RevisionRef(revision="aaa", uri="file:///a")
    canary = CanaryStatus(revision="bbb", uri="file:///b", weight=20)
    before = ModelDeploymentStatus(phase="Healthy", model_name="iris", stable=stable)
    during = before.model_copy(update={"phase": "Progressing", "canary": canary})
    after = ModelDeploymentStatus(
        phase="Healthy", model_name="iris", stable=RevisionRef(revision="bbb", uri="file:///b")
    )
    metrics.record("ns", "iris", ModelDeploymentStatus(), during)
    text = scrape(metrics)
    info = 'weir_rollout_revision_info{model="iris",name="iris",namespace="ns",'
    assert info + 'revision="aaa",track="stable"} 1.0' in text
    assert info + 'revision="bbb",track="canary"} 1.0' in text
    assert 'weir_rollout_canary_weight{name="iris",namespace="ns"} 20.0' in text

    metrics.record("ns", "iris", during, after)
    text = scrape(metrics)
    assert info + 'revision="bbb",track="stable"} 1.0' in text
    assert 'revision="aaa"' not in text
    assert 'track="canary"' not in text

    metrics.forget("ns", "iris")
    assert "weir_rollout_revision_info{" not in scrape(metrics)


def test_model_info_carries_each_serving_revisions_version_and_lineage() -> None:
    metrics = OperatorMetrics()
    lineage = Lineage(
        training_run="runs:/7f3c", dataset=Dataset(uri="s3://d/fraud.parquet", sha256="a" * 64)
    )
    stable = RevisionRef(revision="aaa", uri="file:///a", version="11")
    canary = CanaryStatus(revision="bbb", uri="file:///b", version="12", lineage=lineage)
    during = ModelDeploymentStatus(phase="Progressing", stable=stable, canary=canary)
    metrics.record("ml", "fraud", ModelDeploymentStatus(), during)
    text = scrape(metrics)
    assert (
        'weir_model_info{dataset="s3://d/fraud.parquet",dataset_sha256="' + "a" * 64 + '",'
        'name="fraud",namespace="ml",revision="bbb",track="canary",training_run="runs:/7f3c",'
        'version="12"} 1.0'
    ) in text
    assert 'revision="aaa",track="stable",training_run="",version="11"} 1.0' in text
    promoted = ModelDeploymentStatus(
        phase="Healthy",
        stable=RevisionRef(revision="bbb", uri="file:///b", version="12", lineage=lineage),
    )
    metrics.record("ml", "fraud", during, promoted)
    text = scrape(metrics)
    assert 'revision="aaa"' not in text, "a revision that stopped serving leaves"
    assert 'revision="bbb",track="stable",training_run="runs:/7f3c"' in text
    metrics.forget("ml", "fraud")
    assert "weir_model_info{" not in scrape(metrics)


def test_drift_scores_per_feature_prediction_and_confidence_and_none_left_stale() -> None:
    metrics = OperatorMetrics()
    stable = RevisionRef(revision="aaa", uri="file:///a")
    drift = DriftStatus(
        at="2026-01-01T12:00:00Z",
        window="10m",
        samples=900,
        features=[
            FeatureScore(name="input[2]", score=1.84),
            FeatureScore(name="input[0]", score=0.07),
        ],
        prediction=PredictionDrift(output="probabilities", score=0.31),
        confidence=ConfidenceDrift(output="probabilities", mean=0.6, reference=0.9, score=0.4),
    )
    measured = ModelDeploymentStatus(phase="Healthy", stable=stable, drift=drift)
    metrics.record("ns", "iris", ModelDeploymentStatus(), measured)
    text = scrape(metrics)
    score = 'weir_model_drift_score{feature="%s",name="iris",namespace="ns"} %s'
    assert score % ("input[2]", "1.84") in text
    assert score % ("input[0]", "0.07") in text
    assert score % ("probabilities", "0.31") in text
    assert score % ("probabilities:confidence", "0.4") in text

    fewer = drift.model_copy(update={"features": drift.features[:1], "prediction": None})
    metrics.record("ns", "iris", measured, measured.model_copy(update={"drift": fewer}))
    text = scrape(metrics)
    assert 'feature="input[0]"' not in text
    assert 'feature="probabilities"' not in text
    assert score % ("input[2]", "1.84") in text

    metrics.forget("ns", "iris")
    assert "weir_model_drift_score{" not in scrape(metrics)
