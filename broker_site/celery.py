"""The Celery app: configuration comes from Django settings (CELERY_* names)."""
import os

from celery import Celery
from celery.signals import worker_process_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "broker_site.settings")

app = Celery("broker_site")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_process_init.connect
def load_models_at_process_start(**kwargs):
    """Each pool process loads the models of the queues its worker serves before its first task, so
    that no task's time limit includes the load."""
    from pipeline.workflow.step_tasks import preload_models

    consumed = app.amqp.queues.consume_from or app.amqp.queues  # no -Q: every queue
    preload_models(set(consumed))
