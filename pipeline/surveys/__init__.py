"""One adapter per survey (ZTF, Rubin/LSST): a raw packet -> plain records; no Django, no Celery."""
