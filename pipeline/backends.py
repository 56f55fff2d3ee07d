"""Backends chosen by settings: the raw-alert archive and the cross-match service."""
from functools import cache

from django.conf import settings

from pipeline.ingest.storage import get_archive
from pipeline.steps.xmatch import get_xmatch_backend


@cache
def archive():
    return get_archive(settings.ALERT_ARCHIVE_URL)


@cache
def xmatch_backend():
    options = {}
    if settings.XMATCH_BACKEND == "local":
        options["index_path"] = settings.XMATCH_LOCAL_INDEX
    elif settings.XMATCH_BACKEND == "cds":
        options["timeout"] = settings.XMATCH_CDS_TIMEOUT
        options["url"] = settings.XMATCH_CDS_URL or None
    return get_xmatch_backend(settings.XMATCH_BACKEND, **options)
