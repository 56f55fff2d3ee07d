"""The feature registry lists exactly ALeRCE's light-curve features, each with group, band and unit."""
import pandas as pd

from pipeline.steps.features import registry
from tests.conftest import require_shared


def test_registry_names_equal_alerce_feature_table_header():
    path = require_shared("labeled", "alerce_objects98", "features.csv")
    header = [name for name in pd.read_csv(path, nrows=0).columns if name != "objectId"]
    not_produced = sorted(set(header) - set(registry.FEATURE_NAMES))
    not_alerce = sorted(set(registry.FEATURE_NAMES) - set(header))
    assert not not_produced, f"ALeRCE features that no group produces: {not_produced}"
    assert not not_alerce, f"features of ours that ALeRCE lacks: {not_alerce}"
    assert list(registry.FEATURE_NAMES) == header  # ALeRCE's column order
    assert registry.ALERCE_FEATURE_ORDER == tuple(header)


def test_every_feature_has_group_band_and_meaning():
    assert len(set(registry.FEATURE_NAMES)) == len(registry.FEATURE_NAMES)
    groups = {spec.group for spec in registry.FEATURES.values()}
    assert groups == {module.GROUP for module in registry.GROUPS.values()}
    for name, spec in registry.FEATURES.items():
        assert spec.name == name and spec.meaning
        assert spec.band in (1, 2, None)
        if spec.band is not None:
            assert name.endswith(f"_{spec.band}"), name
    assert registry.FEATURES["Multiband_period"].band is None
    assert registry.FEATURES["Period_band_2"].band == 2
    assert registry.FEATURES["Harmonics_mag_1_1"].band == 1
    assert registry.FEATURES["SPM_tau_rise_2"].unit == "d"
    assert registry.FEATURES["gal_b"].group == "context"
    assert isinstance(registry.FEATURE_VERSION, str) and registry.FEATURE_VERSION


def test_groups_declare_the_shared_contract():
    for module in registry.GROUPS.values():
        assert isinstance(module.GROUP, str)
        assert isinstance(module.PER_BAND, bool)
        assert module.FEATURES
    assert registry.ALERCE_NOT_PRODUCED == ()


def test_feature_report_registry_shows_which_definitions_are_ours():
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("feature_report", registry=True, stdout=out)
    rows = {line.split("|")[1].strip(): line for line in out.getvalue().splitlines() if line.startswith("| ")}
    assert "| definition |" in rows["name"]
    assert "ours, not ALeRCE's: our SPM fit" in rows["SPM_A_1"]
    assert rows["Multiband_period"].rstrip().endswith("| ALeRCE |")
    assert len(rows) == 1 + len(registry.FEATURE_NAMES)
