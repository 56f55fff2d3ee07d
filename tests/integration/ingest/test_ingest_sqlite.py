"""Ingest the real packets twice through the eager embedded default (SQLite, in-process canvas)."""
import io
import re
import tarfile

import pytest
from django.db.models import Count, F, Q

from pipeline.ingest.runner import ingest_paths
from pipeline.models import (
    ContestedCandid, Detection, ForcedPhotometry, Gaia, MagStats, NonDetection, Object, Ps1, Quarantine, RawAlert, SolarSystem,
    StepTiming,
)
from tests.conftest import require_shared
from tests.packets import contested_candids, expected_rows, refused_packets

pytestmark = pytest.mark.django_db(transaction=True)

TABLES = (Object, Detection, NonDetection, ForcedPhotometry, Ps1, Gaia, SolarSystem, RawAlert, Quarantine, MagStats)


def table_counts():
    return {model.__name__: model.objects.count() for model in TABLES}


def test_real_packets_twice_change_nothing(broker_env):
    folder = require_shared("ztf_alerts")
    first = ingest_paths([folder], batch_size=150, progress=False)
    after_first = table_counts()
    second = ingest_paths([folder], batch_size=150, progress=False)

    assert table_counts() == after_first
    n_files = len(list(folder.glob("*.avro")))
    refused = refused_packets(folder)
    assert len(refused) == 74
    assert first.alerts_read == second.alerts_read == n_files
    assert not first.step_failures, first.report()
    assert (second.new_objects, second.detections, second.non_detections) == (0, 0, 0)
    assert second.duplicates_skipped == n_files - len(refused) and second.conflicts == 0
    assert second.rows_dropped == 0 and second.quarantined == len(refused)  # the refused ones, again

    # Rebroadcast packets (Fink's 2023 stream): 74 carry a rewritten jd and a placeholder position
    # (refused whole), others history rows with a fill jd (dropped, one entry per packet), and some
    # carry in their histories candids that another object's history carries too (stored for none,
    # one entry per object and candid); any other conflict is one entry per packet.
    entries = list(Quarantine.objects.values_list("source", "reason"))
    assert first.quarantined == len(entries) > len(refused)
    kinds = {"refused": [], "dropped": [], "conflict": [], "contested": []}
    for source, reason in entries:
        if source.rsplit("/", 1)[-1] in refused:
            assert re.match(r"candidate jd \S+ (is \d+ s from the exposure time|lies outside the dark part)", reason)
            kinds["refused"].append(reason)
        elif re.match(r"alert \d+: history rows dropped: dropped \d+ prv_candidates whose jd", reason):
            kinds["dropped"].append(reason)
        elif re.match(r"candid \d+ is carried by the histories of several objects and is the own alert of none", reason):
            kinds["contested"].append(reason)
        else:
            assert re.match(r"\d+ conflicting cop(y|ies) of a detection: candid ", reason), reason
            kinds["conflict"].append(reason)
    assert len(kinds["refused"]) == len(refused) and kinds["dropped"] and kinds["contested"]
    assert first.conflicts == sum(int(r.split()[0]) for r in kinds["conflict"]) + len(kinds["contested"])
    assert first.rows_dropped == sum(int(r.split(": dropped ")[1].split()[0]) for r in kinds["dropped"])
    # Candids that two objects' histories claim, neither its own alert: none is stored, each object's
    # claim is one entry (in every order: tests/integration/ingest/test_contested_candid.py).
    contested = contested_candids(folder)
    assert len(contested) == 15 and not Detection.objects.filter(candid__in=contested).exists()
    assert len(kinds["contested"]) == 2 * len(contested)
    assert {int(r.split()[1]) for r in kinds["contested"]} == contested
    assert set(ContestedCandid.objects.values_list("candid", flat=True)) == contested

    candids, limits, forced = expected_rows(folder)
    candids -= contested
    assert after_first["Detection"] == len(candids) == first.detections
    assert after_first["NonDetection"] == len(limits) == first.non_detections
    assert after_first["ForcedPhotometry"] == len(forced) == first.forced_photometry > 0
    assert after_first["RawAlert"] == n_files - len(refused)
    assert not Object.objects.filter(simulated=True).exists()  # real ZTF ids are never taken for simulated
    assert after_first["Object"] == Detection.objects.values("oid").distinct().count() == first.new_objects
    # A detection seen again inside a later alert's prv_candidates is stored once, from the alert itself.
    assert not Detection.objects.values("candid").annotate(n=Count("candid")).filter(n__gt=1).exists()
    assert Detection.objects.filter(has_stamp=True).count() == n_files - len(refused)

    # The canvas ran on every batch: correction, magstats, and cross-match (queued: no local index).
    assert set(StepTiming.objects.values_list("step", flat=True)) >= {"ingest", "correct", "magstats", "xmatch"}
    assert MagStats.objects.values("oid").distinct().count() == after_first["Object"]
    # issue 27: no object's position is spread by placeholder rows (sigmas in arcsec)
    assert Object.objects.filter(sigmara__isnull=False).count() == after_first["Object"]
    assert not Object.objects.filter(Q(sigmara__gt=2) | Q(sigmadec__gt=2)).exists()
    # Per-band stellar is the band's first detection's; the band holding the object's first detection
    # carries the object's flag as the correction step set it.
    assert MagStats.objects.filter(stellar=True).exists()
    assert MagStats.objects.exclude(stellar=F("oid__stellar")).exists()
    assert not MagStats.objects.filter(firstmjd=F("oid__firstmjd")).exclude(stellar=F("oid__stellar")).exists()
    assert not Detection.objects.filter(corrected__isnull=True).exists()
    # Every detection has corrected photometry or the reason why not.
    assert not Detection.objects.filter(magpsf_corr__isnull=True, corr_note="").exists()
    assert not Detection.objects.filter(sigmapsf_corr__isnull=True, corr_note="").exists()
    assert Detection.objects.filter(corr_note="", magpsf_corr__isnull=False).exists()


def test_older_schemas_and_a_nightly_archive(broker_env, tmp_path):
    """Older schemas as loose files; the cutout-less 3.x packets packed like a public ZTF night archive."""
    older = require_shared("ztf_alerts_older_schemas")
    no_cutouts = sorted(require_shared("ztf_alerts_no_cutouts").glob("*.avro"))
    night = tmp_path / "ztf_public_20210720.tar.gz"
    with tarfile.open(night, "w:gz") as tar:
        for path in no_cutouts:
            tar.add(path, arcname=path.name)

    summary = ingest_paths([older, night], batch_size=50, progress=False)

    n_older = len(list(older.glob("*.avro")))
    assert summary.alerts_read == n_older + len(no_cutouts)
    assert summary.quarantined == 0 and not summary.step_failures, summary.report()
    assert RawAlert.objects.count() == summary.alerts_read
    assert RawAlert.objects.filter(schemavsn="2.0").exists() and RawAlert.objects.filter(schemavsn="3.5").exists()
    assert RawAlert.objects.filter(schemavsn__isnull=True).exists()  # the unversioned 2017/18 packets
    # Schema 3.5 carried forced photometry in prv_candidates: one stored row per epoch, not upper limits.
    stripped_oids = RawAlert.objects.filter(schemavsn="3.5").values("oid")
    assert ForcedPhotometry.objects.filter(oid__in=stripped_oids).count() == summary.forced_photometry > 0
    assert not NonDetection.objects.filter(oid__in=stripped_oids).exists()
    # Packets whose cutouts were stripped upstream give detections without a stamp.
    stripped = RawAlert.objects.filter(schemavsn="3.5").values("candid")
    assert Detection.objects.filter(candid__in=stripped).count() == stripped.count()
    assert not Detection.objects.filter(candid__in=stripped, has_stamp=True).exists()


def test_ingest_files_task_on_the_ingest_queue(broker_env):
    from pipeline.workflow import ops_tasks

    folder = require_shared("ztf_alerts_older_schemas")
    result = ops_tasks.ingest_files.apply(args=([str(folder)],), kwargs={"batch_size": 7}).get()
    assert result["alerts_read"] == len(list(folder.glob("*.avro"))) == RawAlert.objects.count()
    assert result["batches"] == -(-result["alerts_read"] // 7)
    assert ops_tasks.ingest_files.apply(args=([str(folder)],)).get()["duplicates_skipped"] == result["alerts_read"]


def test_ingest_command_prints_summary_and_step_latencies(broker_env):
    from django.core.management import call_command

    folder = require_shared("ztf_alerts_older_schemas")
    out = io.StringIO()
    call_command("ingest", str(folder), "--batch-size", "7", "--no-progress", stdout=out)
    text = out.getvalue()
    n = len(list(folder.glob("*.avro")))
    batches = -(-n // 7)
    assert f"alerts read          {n}" in text and f"batches              {batches}" in text
    for step in ("ingest", "xmatch", "correct", "magstats", "features"):
        assert re.search(rf"^  {step} +{batches} batches", text, re.M), text
