"""Fixtures of the integration tests: a real S3 API served locally by moto's server mode."""
import socket
import uuid

import pytest

def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    port = _free_port()
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_env(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL",
                 "ALERT_ARCHIVE_S3_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def bucket(s3_endpoint, aws_env):
    name = f"alerts-{uuid.uuid4().hex[:12]}"
    __import__("boto3").client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name




@pytest.fixture
def broker_env(settings, tmp_path):
    """Archive and cross-match index in this test's own folder (the index is absent until built)."""
    from pipeline import backends

    settings.ALERT_ARCHIVE_URL = str(tmp_path / "archive")
    settings.XMATCH_LOCAL_INDEX = str(tmp_path / "catalogs" / "allwise.npz")
    settings.OUTPUT_STREAM_URL = ""  # tests that read the output stream point it at their own Redis db
    backends.archive.cache_clear()
    backends.xmatch_backend.cache_clear()
    yield tmp_path
    backends.archive.cache_clear()
    backends.xmatch_backend.cache_clear()
