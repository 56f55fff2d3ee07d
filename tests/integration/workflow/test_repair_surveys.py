"""repair's rules on a mixed ZTF + Rubin database: a step that runs on one survey only never counts the
other survey's objects as behind it (else `repair` would re-run them for ever)."""
import pytest

from pipeline.ingest.runner import ingest_paths
from pipeline.models import Detection, Object
from pipeline.workflow import repair
from tests.conftest import require_shared

pytestmark = pytest.mark.django_db(transaction=True)


def test_after_ingesting_rubin_and_ztf_packets_no_object_is_behind(broker_env):
    rubin = [require_shared("lsst_alerts", name) for name in ("rubin_v9_0", "rubin_v10_0")]
    ztf = require_shared("ztf_alerts_older_schemas")
    summary = ingest_paths([*rubin, ztf], batch_size=50, progress=False)
    assert summary.quarantined == 0 and not summary.step_failures, summary.report()
    rubin_oids = set(Object.objects.filter(survey="lsst").values_list("oid", flat=True))
    ztf_oids = set(Object.objects.filter(survey="ztf").values_list("oid", flat=True))
    assert rubin_oids and ztf_oids
    # Rubin detections are never corrected (the correct step is ZTF-only): still nothing is behind.
    assert Detection.objects.filter(survey="lsst", corrected__isnull=True).exists()
    found = repair.find_behind()
    assert {step: oids for step, oids in found.items() if oids} == {}

    # The rule still finds a ZTF object whose detections lost their correction, and only it.
    oid = sorted(ztf_oids)[0]
    Detection.objects.filter(oid=oid).update(corrected=None)
    assert repair.find_behind()["correct"] == {oid}
