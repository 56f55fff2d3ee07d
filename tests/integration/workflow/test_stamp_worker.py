"""The stamp classifier on a real `-Q gpu` worker (here without a GPU: it runs on the CPU and says so)."""
import shutil

import pytest

from tests.conftest import require_shared
from tests.integration.farm import Farm
from tests.integration.services import require_postgres, require_redis

pytestmark = pytest.mark.services


def test_gpu_queue_worker_classifies_new_objects_on_the_cpu(tmp_path):
    source = require_shared("ztf_alerts")
    folder = tmp_path / "packets"
    folder.mkdir()
    for path in sorted(source.glob("*.avro"))[:40]:
        shutil.copy(path, folder / path.name)
    with Farm(tmp_path, require_postgres(), require_redis(), redis_db=9, STAMP_CLASSIFIER="on") as farm:
        farm.start_worker(name="cpu")
        gpu = farm.start_worker(queues=("gpu",), concurrency=1, name="gpu")
        run = farm.manage("ingest", str(folder), "--batch-size", "20", "--no-progress")
        assert run.returncode == 0 and "steps failed" not in run.stdout, run.stdout + run.stderr[-2000:]
        n_objects = farm.sql("SELECT count(*) FROM object")[0][0]
        per_object = farm.sql(
            "SELECT count(*), round(sum(probability)::numeric, 4) FROM probability "
            "WHERE classifier_name = 'stamp_classifier' GROUP BY oid"
        )
        gpu_log = gpu.log.read_text()
    assert len(per_object) == n_objects > 0
    assert {tuple(map(float, row)) for row in per_object} == {(5.0, 1.0)}
    assert "pipeline.workflow.step_tasks.stamp_classify" in gpu_log
    assert "no GPU visible to TensorFlow, running on the CPU" in gpu_log
