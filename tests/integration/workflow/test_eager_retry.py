"""Eager runs (no broker) retry transient database faults as workers do, instead of failing the step."""
import pytest
from django.db import OperationalError

from pipeline.ingest.runner import ingest_paths
from pipeline.models import MagStats, Object, Quarantine, StepTiming
from pipeline.simulation.night import simulate_night
from pipeline.store import loaders
from pipeline.workflow import canvas

pytestmark = pytest.mark.django_db(transaction=True)


def test_eager_step_retries_a_transient_database_fault(broker_env, monkeypatch):
    night = broker_env / "night"
    simulate_night(night, 12, seed=4)
    ingest_paths([night], batch_size=100, progress=False)
    expected = sorted(MagStats.objects.values_list("oid", "fid", "ndet"))
    assert expected
    MagStats.objects.all().delete()
    oids = sorted(Object.objects.values_list("oid", flat=True))

    real, calls = loaders.detections, []

    def locked_once(*args, **kwargs):  # the step's first read meets a locked database
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("database is locked")
        return real(*args, **kwargs)

    monkeypatch.setattr(loaders, "detections", locked_once)
    canvas.build("eager-retry", oids).apply_async().get(disable_sync_subtasks=False)

    assert len(calls) >= 2
    assert sorted(MagStats.objects.values_list("oid", "fid", "ndet")) == expected
    assert not Quarantine.objects.exists()
    assert StepTiming.objects.filter(batch_id="eager-retry", step="magstats").count() == 1
