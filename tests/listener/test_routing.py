"""The routing rule: which studies go to the stroke/ICH pipeline, and why the others do not."""

from __future__ import annotations

import pytest

from listener.routing import RoutingRule, SeriesFacts
from triage.settings_sections import RoutingSection

DEFAULTS = RoutingSection.model_fields
RULE = RoutingRule.from_lists(
    DEFAULTS["modalities"].get_default(call_default_factory=True),
    DEFAULTS["body_parts"].get_default(call_default_factory=True),
    DEFAULTS["description_pattern"].get_default(),
)


def facts(
    modality: str | None = "CT",
    body_part: str | None = None,
    series: str | None = None,
    study: str | None = None,
) -> SeriesFacts:
    return SeriesFacts(modality, body_part, series, study)


@pytest.mark.parametrize(
    "series",
    [
        facts(body_part="HEAD"),
        facts(body_part="brain"),
        facts(modality="ct", body_part="SKULL"),
        facts(series="Kopf nativ 5mm"),
        facts(series="CT Schädel"),
        facts(study="CT HEAD WITHOUT CONTRAST"),
        facts(study="Stroke protocol"),
        facts(body_part="CHEST", study="CT crâne"),
    ],
)
def test_head_ct_goes_to_the_pipeline(series: SeriesFacts) -> None:
    routed, reason = RULE.decide([series])
    assert routed and reason == "head CT series present"


@pytest.mark.parametrize(
    "series",
    [
        facts(modality="MR", body_part="HEAD", study="MR HEAD"),
        facts(body_part="CHEST", series="THORAX 1.0", study="CT THORAX"),
        facts(modality=None, body_part="HEAD"),
        facts(body_part=None, series=None, study=None),
        facts(series="Forehead soft tissue", study="CT FACE"),
    ],
)
def test_other_studies_are_not_routed_and_the_reason_names_the_modalities(
    series: SeriesFacts,
) -> None:
    routed, reason = RULE.decide([series])
    assert not routed
    assert "no series matches the routing rule" in reason
    assert f"modalities {(series.modality or '?').upper()}" in reason
    assert "need CT of the head" in reason


def test_one_head_ct_series_is_enough_in_a_mixed_study() -> None:
    routed, _ = RULE.decide([facts(modality="SR"), facts(body_part="HEAD"), facts(modality="MR")])
    assert routed


def test_study_without_series_is_not_routed() -> None:
    routed, reason = RULE.decide([])
    assert not routed and "no series matches" in reason


def test_site_rule_can_add_modalities_and_body_parts() -> None:
    rule = RoutingRule.from_lists(["ct", "mr"], ["neck"], r"(?i)angio")
    assert rule.decide([facts(modality="MR", body_part="NECK")])[0]
    assert rule.decide([facts(series="CT Angio")])[0]
    assert not rule.decide([facts(body_part="HEAD")])[0]
