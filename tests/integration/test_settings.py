"""Secrets and defaults: DEBUG off unless asked for, only on loopback; the production example of
.env.example passes `manage.py check --deploy` with no warning."""
import os
import re
import secrets
import subprocess
import sys

from tests.conftest import REPO_ROOT

BLOCK = re.compile(r"# >>> production example.*?\n(.*?)# <<< production example", re.S)


def production_example():
    text = (REPO_ROOT / ".env.example").read_text()
    env = {}
    for line in BLOCK.search(text).group(1).splitlines():
        name, _, value = line.lstrip("# ").partition("=")
        env[name] = value
    env["DJANGO_SECRET_KEY"] = secrets.token_urlsafe(50)  # the example names how to make one
    return env


def manage(args, env_overrides, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_URL", "CELERY_"))}
    env.update(BROKER_VAR_DIR=str(tmp_path / "var"), **env_overrides)
    return subprocess.run([sys.executable, str(REPO_ROOT / "manage.py"), *args], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)


def test_check_deploy_is_clean_with_the_production_example(tmp_path):
    env = production_example()
    env["DATABASE_URL"] = f"sqlite:///{tmp_path}/deploy.sqlite3"  # check --deploy needs no server
    result = manage(["check", "--deploy", "--fail-level", "WARNING"], env, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_warns_on_the_embedded_defaults(tmp_path):
    result = manage(["check", "--deploy", "--fail-level", "WARNING"], {}, tmp_path)
    assert result.returncode != 0
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in result.stderr
    assert "security.W018" not in result.stderr  # DEBUG is off by default


def test_debug_is_off_by_default_and_refused_beyond_loopback(tmp_path):
    show = ["shell", "-c", "from django.conf import settings; print(settings.DEBUG, len(settings.SECRET_KEY))"]
    assert manage(show, {}, tmp_path).stdout.split()[-2:] == ["False", str(len(secrets.token_urlsafe(50)))]
    assert manage(show, {"DJANGO_DEBUG": "true"}, tmp_path).stdout.split()[-2] == "True"
    refused = manage(show, {"DJANGO_DEBUG": "true", "DJANGO_ALLOWED_HOSTS": "broker.example.org"}, tmp_path)
    assert refused.returncode != 0 and "loopback only" in refused.stderr


def test_the_installation_key_is_made_once_and_kept(tmp_path):
    show = ["shell", "-c", "from django.conf import settings; print(settings.SECRET_KEY)"]
    first = manage(show, {}, tmp_path).stdout.split()[-1]
    assert manage(show, {}, tmp_path).stdout.split()[-1] == first
    assert (tmp_path / "var" / "secret_key").read_text().strip() == first
    assert oct((tmp_path / "var" / "secret_key").stat().st_mode & 0o777) == "0o600"


def test_visibility_timeout_outlasts_a_task_and_its_retry_countdown(tmp_path):
    from django.conf import settings

    visibility = settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
    assert visibility == settings.CELERY_VISIBILITY_TIMEOUT == 300  # not the transport's default hour
    assert visibility > settings.CELERY_TASK_TIME_LIMIT + settings.CELERY_TASK_RETRY_BACKOFF_MAX
    show = ["shell", "-c", "from django.conf import settings; print(settings.CELERY_BROKER_TRANSPORT_OPTIONS)"]
    assert "'visibility_timeout': 45" in manage(show, {"CELERY_VISIBILITY_TIMEOUT": "45", "CELERY_TASK_TIME_LIMIT": "20",
                                                      "CELERY_TASK_RETRY_BACKOFF_MAX": "5"}, tmp_path).stdout
    refused = manage(show, {"CELERY_VISIBILITY_TIMEOUT": "60"}, tmp_path)  # below the 120 s time limit
    assert refused.returncode != 0 and "CELERY_VISIBILITY_TIMEOUT must exceed" in refused.stderr


def test_an_unhandled_error_is_logged_with_debug_off(tmp_path):
    """A request that fails (here its database cannot be opened) leaves its traceback on stderr, DEBUG off."""
    request = ("from django.test import Client; "
               "print('status', Client(raise_request_exception=False).get('/').status_code)")
    missing = tmp_path / "no such folder" / "broker.sqlite3"
    result = manage(["shell", "-c", request], {"DATABASE_URL": f"sqlite:///{missing}"}, tmp_path)
    assert "status 500" in result.stdout, result.stdout + result.stderr
    assert "ERROR django.request: Internal Server Error: /" in result.stderr, result.stderr
    assert "OperationalError" in result.stderr and "Traceback" in result.stderr
