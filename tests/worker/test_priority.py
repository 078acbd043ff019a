"""Flags and priority follow the bundle thresholds, with site overrides winning."""

from worker.priority import triage

THRESHOLDS = {"any": 0.4, "subdural": 0.3, "ischemic": 0.5}


def test_flagged_finding_is_critical():
    result = triage({"any": 0.9, "subdural": 0.8, "ischemic": 0.1}, THRESHOLDS)
    assert result.priority == "critical"
    assert result.flags == {"any": True, "subdural": True, "ischemic": False}


def test_near_threshold_is_urgent_and_low_is_routine():
    assert triage({"any": 0.25, "subdural": 0.0, "ischemic": 0.0}, THRESHOLDS).priority == "urgent"
    assert triage({"any": 0.05, "subdural": 0.0, "ischemic": 0.1}, THRESHOLDS).priority == "routine"


def test_site_override_changes_the_flag():
    probabilities = {"any": 0.35, "subdural": 0.0, "ischemic": 0.0}
    assert triage(probabilities, THRESHOLDS).flags["any"] is False
    overridden = triage(probabilities, THRESHOLDS, {"any": 0.3})
    assert overridden.flags["any"] is True
    assert overridden.thresholds["any"] == 0.3
