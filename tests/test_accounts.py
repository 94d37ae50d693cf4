"""Stored accounts: encryption at rest, keys and rotation, the cached lookup, the backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import django
import pytest
from django.core import mail
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.db import connection

from django_gmail_smtp import accounts, conf, crypto
from django_gmail_smtp.backend import EmailBackend
from django_gmail_smtp.exceptions import GmailConfigError, SecretDecryptionError
from django_gmail_smtp.models import GmailAccount
from django_gmail_smtp.sandbox import SANDBOX_PASSWORD, SANDBOX_USER

from .conftest import LEGACY_API, gmail_check

ROOT = Path(__file__).resolve().parent.parent
APP_PASSWORD = "abcdefghijklmnop"


def legacy_api(test: Any) -> Any:
    """This test sets EMAIL_* on purpose (deprecated on Django 6.1)."""
    for mark in LEGACY_API:
        test = mark(test)
    return test


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    """The cache outlives each test's database rollback: start every test without stored snapshots."""
    cache.clear()
    yield
    cache.clear()


def make_account(name: str = "shop", password: str = APP_PASSWORD, **fields: Any) -> GmailAccount:
    fields.setdefault("username", "shop@gmail.com")
    account = GmailAccount(name=name, **fields)
    account.set_password(password)
    account.save()
    return account


def sandbox_account(sandbox: Any, name: str = "shop", **fields: Any) -> GmailAccount:
    return make_account(
        name,
        SANDBOX_PASSWORD,
        username=SANDBOX_USER,
        host=sandbox.host,
        port=sandbox.starttls_port,
        security=GmailAccount.Security.STARTTLS,
        timeout=5,
        **fields,
    )


def raw_secret_column(pk: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT encrypted_secret FROM gmail_smtp_gmailaccount WHERE id = %s", [pk])
        return str(cursor.fetchone()[0])


# -- crypto --------------------------------------------------------------------------------


def test_encrypt_round_trip_and_token_hides_the_plaintext() -> None:
    token = crypto.encrypt(APP_PASSWORD)
    assert APP_PASSWORD not in token
    assert crypto.decrypt(token) == APP_PASSWORD
    assert crypto.encrypt(APP_PASSWORD) != token  # a fresh IV every time


def test_key_derived_from_secret_key_and_fallbacks_decrypt(settings: Any) -> None:
    token = crypto.encrypt(APP_PASSWORD)
    settings.SECRET_KEY = "a-brand-new-secret-key"
    with pytest.raises(crypto.InvalidToken):
        crypto.decrypt(token)
    settings.SECRET_KEY_FALLBACKS = ["tests-only-not-secret"]
    assert crypto.decrypt(token) == APP_PASSWORD
    assert not crypto.is_current(token)
    assert crypto.is_current(crypto.rotate(token))


def test_dedicated_keys_encrypt_and_secret_key_tokens_stay_readable(settings: Any) -> None:
    old = crypto.encrypt(APP_PASSWORD)  # under the SECRET_KEY-derived key
    first, second = crypto.generate_key(), crypto.generate_key()
    settings.GMAIL_SMTP = {"ENCRYPTION_KEYS": [first, second]}
    token = crypto.encrypt(APP_PASSWORD)
    assert crypto.is_current(token)
    assert crypto.decrypt(old) == APP_PASSWORD  # switching to dedicated keys loses nothing
    settings.GMAIL_SMTP = {"ENCRYPTION_KEYS": [second]}
    with pytest.raises(crypto.InvalidToken):
        crypto.decrypt(token)


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ("not-a-list", "must be a list of Fernet keys"),
        ([], "empty list"),
        (["short"], "GMAIL_SMTP['ENCRYPTION_KEYS'][0] is not a valid Fernet key"),
    ],
)
def test_bad_encryption_keys_are_named_without_the_key(settings: Any, keys: Any, expected: str) -> None:
    settings.GMAIL_SMTP = {"ENCRYPTION_KEYS": keys}
    with pytest.raises(GmailConfigError, match=expected.replace("[", r"\[").replace("]", r"\]")) as info:
        crypto.encrypt("x")
    assert "short" not in str(info.value)
    assert "Fernet.generate_key()" in str(info.value)
    assert info.value.check_id == "gmail_smtp.E019"


def test_bad_encryption_keys_are_reported_as_such_not_as_a_changed_key(settings: Any, db: Any) -> None:
    """A stored secret and a typo in the second key: the key is named, SECRET_KEY is not blamed."""
    make_account()
    settings.GMAIL_SMTP = {"ENCRYPTION_KEYS": [crypto.generate_key(), "not-a-fernet-key"]}
    with pytest.raises(GmailConfigError) as info:
        accounts.account_options("shop")
    assert not isinstance(info.value, SecretDecryptionError)
    assert info.value.check_id == "gmail_smtp.E019"
    text = str(info.value)
    assert "GMAIL_SMTP['ENCRYPTION_KEYS'][1] is not a valid Fernet key" in text
    assert "cannot be decrypted" not in text
    assert "SECRET_KEY_FALLBACKS" not in text
    assert "not-a-fernet-key" not in text
    outcome = gmail_check("--account", "shop")
    assert "is not a valid Fernet key" in outcome.text
    assert "cannot be decrypted" not in outcome.text


GOOD_KEY = "bXktMzItYnl0ZS1rZXktZm9yLXRoZS10ZXN0cy0hISE="  # 32 bytes, not used for anything else


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (["short-key"], "GMAIL_SMTP['ENCRYPTION_KEYS'][0] is not a valid Fernet key"),
        ([GOOD_KEY, "x" * 44], "GMAIL_SMTP['ENCRYPTION_KEYS'][1] is not a valid Fernet key"),
        ([GOOD_KEY, 1234], "GMAIL_SMTP['ENCRYPTION_KEYS'][1] is not a valid Fernet key"),
        (GOOD_KEY, "must be a list of Fernet keys"),
        ([], "is an empty list"),
    ],
)
def test_system_check_validates_the_encryption_keys_without_the_database(
    settings: Any, db: Any, django_assert_num_queries: Any, keys: Any, expected: str
) -> None:
    from django.core.checks import ERROR, run_checks

    settings.GMAIL_SMTP = {"ENCRYPTION_KEYS": keys}
    with django_assert_num_queries(0):
        found = [message for message in run_checks(tags=["gmail_smtp"]) if message.id == "gmail_smtp.E019"]
    assert len(found) == 1
    assert found[0].level == ERROR
    assert expected in found[0].msg
    assert "Fernet.generate_key()" in found[0].hint
    for key in keys if isinstance(keys, list) else [keys]:
        if isinstance(key, str) and key != GOOD_KEY:
            assert key not in found[0].msg + found[0].hint
    assert GOOD_KEY not in found[0].msg + found[0].hint


def test_system_check_accepts_valid_keys(settings: Any) -> None:
    from django.core.checks import run_checks

    settings.GMAIL_SMTP = {"ENCRYPTION_KEYS": [GOOD_KEY, crypto.generate_key().encode()]}
    assert [message for message in run_checks(tags=["gmail_smtp"]) if message.id == "gmail_smtp.E019"] == []


# -- the model -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_secret_is_encrypted_in_the_database_and_absent_from_str_and_repr() -> None:
    account = make_account()
    column = raw_secret_column(account.pk)
    assert column
    assert APP_PASSWORD not in column
    assert APP_PASSWORD not in str(account)
    assert APP_PASSWORD not in repr(account)
    assert GmailAccount.objects.get(pk=account.pk).get_password() == APP_PASSWORD


@pytest.mark.django_db
def test_app_password_spaces_as_google_shows_them_are_removed() -> None:
    account = make_account(password="abcd efgh ijkl mnop")
    assert account.get_password() == APP_PASSWORD


@pytest.mark.django_db
def test_only_one_default_account() -> None:
    from django.db import IntegrityError, transaction

    make_account("a", is_default=True)
    with pytest.raises(IntegrityError), transaction.atomic():
        make_account("b", is_default=True)


# -- account_options -----------------------------------------------------------------------


@pytest.mark.django_db
def test_account_options_are_resolver_options() -> None:
    make_account(host="smtp.gmail.com", port=465, security=GmailAccount.Security.SSL, timeout=7)
    assert accounts.account_options("shop") == {
        "host": "smtp.gmail.com",
        "port": 465,
        "username": "shop@gmail.com",
        "password": APP_PASSWORD,
        "use_tls": False,
        "use_ssl": True,
        "timeout": 7.0,
        "auth_method": "app_password",  # explicit: OAuth2 values in the environment do not apply
    }


@pytest.mark.django_db
def test_stored_account_ranks_below_arguments_and_above_settings(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_account()
    settings.GMAIL_SMTP = {"ACCOUNT": "shop"}
    monkeypatch.setenv("GMAIL_SMTP_TIMEOUT", "3")
    config = conf.resolve({"username": "override@gmail.com"}, accounts=accounts.account_options)
    assert config.username == "override@gmail.com"
    assert config.provenance["username"].source == conf.SOURCE_ARGUMENT
    assert (config.host, config.port, config.use_tls, config.password) == ("smtp.gmail.com", 587, True, APP_PASSWORD)
    assert config.provenance["host"] == conf.Value(conf.SOURCE_DATABASE, "stored account 'shop'")
    assert config.timeout == 10.0  # the account's, not the environment's 3
    assert config.provenance["timeout"].source == conf.SOURCE_DATABASE


@pytest.mark.django_db
def test_default_means_the_account_named_default_else_the_flagged_one() -> None:
    make_account("main", username="main@gmail.com", is_default=True)
    assert accounts.account_options("default")["username"] == "main@gmail.com"
    make_account("default", username="named@gmail.com")
    assert accounts.account_options("default")["username"] == "named@gmail.com"


@pytest.mark.django_db
def test_default_without_any_default_account_is_a_clear_error() -> None:
    make_account("main")
    with pytest.raises(GmailConfigError, match="none is marked as the default account") as info:
        accounts.account_options("default")
    assert info.value.check_id == "gmail_smtp.E022"


@pytest.mark.django_db
def test_unknown_account_is_a_clear_error_naming_the_stored_ones() -> None:
    make_account("main")
    with pytest.raises(GmailConfigError, match="'shoop'") as info:
        accounts.account_options("shoop")
    assert "stored accounts: 'main'" in str(info.value)
    assert info.value.check_id == "gmail_smtp.E022"  # its own id, not E010 ("not a number")


@pytest.mark.django_db
def test_disabled_account_is_a_clear_error() -> None:
    make_account(enabled=False)
    with pytest.raises(GmailConfigError, match="'shop' is disabled") as info:
        accounts.account_options("shop")
    assert info.value.check_id == "gmail_smtp.E023"


@pytest.mark.django_db
def test_account_without_secret_is_a_clear_error() -> None:
    make_account(password="")
    with pytest.raises(GmailConfigError, match="has no app password") as info:
        accounts.account_options("shop")
    assert info.value.check_id == "gmail_smtp.E024"


@pytest.mark.django_db
def test_wrong_key_names_the_account_and_the_way_out(settings: Any) -> None:
    make_account()
    settings.SECRET_KEY = "rotated-without-keeping-the-old-one"
    with pytest.raises(SecretDecryptionError) as info:
        accounts.account_options("shop")
    assert (info.value.account, info.value.check_id) == ("shop", "gmail_smtp.E025")
    text = str(info.value)
    assert "'shop'" in text
    assert "SECRET_KEY_FALLBACKS" in text
    assert "gmail_rotate_keys" in text
    assert isinstance(info.value, GmailConfigError)
    settings.SECRET_KEY_FALLBACKS = ["tests-only-not-secret"]
    assert accounts.account_options("shop")["password"] == APP_PASSWORD


# -- rotation ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_rotate_keys_reencrypts_under_the_current_key(settings: Any) -> None:
    account = make_account()
    before = raw_secret_column(account.pk)
    settings.SECRET_KEY = "the-new-secret-key"
    settings.SECRET_KEY_FALLBACKS = ["tests-only-not-secret"]
    call_command("gmail_rotate_keys", "--dry-run", stdout=(out := _Buffer()))
    assert "1 secret(s) under an older key" in out.text
    assert raw_secret_column(account.pk) == before
    call_command("gmail_rotate_keys", stdout=(out := _Buffer()))
    assert "Re-encrypted 1 secret(s)" in out.text
    after = raw_secret_column(account.pk)
    assert after != before
    assert APP_PASSWORD not in after
    settings.SECRET_KEY_FALLBACKS = []  # the old key can go now
    assert accounts.account_options("shop")["password"] == APP_PASSWORD


@pytest.mark.django_db
def test_rotate_keys_names_accounts_it_cannot_decrypt(settings: Any) -> None:
    make_account("lost")
    settings.SECRET_KEY = "no-fallback-this-time"
    make_account("fine")
    with pytest.raises(CommandError, match="'lost'") as info:
        call_command("gmail_rotate_keys", stdout=_Buffer())
    assert info.value.returncode == 1
    assert "SECRET_KEY_FALLBACKS" in str(info.value)


class _Buffer:
    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> None:
        self.text += text

    def flush(self) -> None:
        pass


# -- the backend through the sandbox -------------------------------------------------------


@pytest.fixture
def sandbox_ca(settings: Any, gmail_sandbox: Any) -> Any:
    """Trust the sandbox's CA the way a project trusts a private CA: GMAIL_SMTP['SSL_CAFILE']."""
    settings.GMAIL_SMTP = {"SSL_CAFILE": gmail_sandbox.ca_file}
    return gmail_sandbox


@pytest.mark.django_db
def test_backend_with_account_delivers_through_the_sandbox(sandbox_ca: Any) -> None:
    sandbox_account(sandbox_ca)
    backend = EmailBackend(account="shop")
    assert backend.config.provenance["password"].source == conf.SOURCE_DATABASE
    assert backend.send_messages([mail.EmailMessage("Hello", "Body", SANDBOX_USER, ["to@example.com"])]) == 1
    received = sandbox_ca.wait_for_messages(1)[0]
    assert received.rcpt_tos == ["to@example.com"]
    assert received.auth_user == SANDBOX_USER
    assert received.tls


@pytest.mark.django_db
def test_gmail_smtp_account_setting_names_the_account(sandbox_ca: Any, settings: Any) -> None:
    sandbox_account(sandbox_ca, name="main")
    settings.GMAIL_SMTP = {"SSL_CAFILE": sandbox_ca.ca_file, "ACCOUNT": "main"}
    backend = EmailBackend()
    assert backend.send_messages([mail.EmailMessage("Hi", "Body", SANDBOX_USER, ["a@example.com"])]) == 1
    assert sandbox_ca.wait_for_messages(1)[0].auth_user == SANDBOX_USER


@pytest.mark.skipif(django.VERSION < (6, 1), reason="MAILERS is Django 6.1+")
@pytest.mark.django_db
def test_mailers_alias_can_name_a_stored_account(sandbox_ca: Any, settings: Any) -> None:
    sandbox_account(sandbox_ca)
    settings.MAILERS = {
        "default": {"BACKEND": "django_gmail_smtp.backend.EmailBackend", "OPTIONS": {"account": "shop"}}
    }
    backend = mail.mailers["default"]  # type: ignore[attr-defined]
    assert backend.config.provenance["host"].source == conf.SOURCE_DATABASE
    assert backend.send_messages([mail.EmailMessage("Hi", "Body", SANDBOX_USER, ["a@example.com"])]) == 1
    sandbox_ca.wait_for_messages(1)


@pytest.mark.django_db(transaction=True)
def test_zero_queries_per_message_after_warm_up(sandbox_ca: Any, django_assert_num_queries: Any) -> None:
    sandbox_account(sandbox_ca)

    def send_one(number: int) -> None:
        backend = EmailBackend(account="shop")  # what send_mail() does: a new backend each time
        message = mail.EmailMessage(f"Message {number}", "Body", SANDBOX_USER, ["to@example.com"])
        assert backend.send_messages([message]) == 1

    send_one(0)  # warm-up: reads the accounts once
    with django_assert_num_queries(0):
        for number in range(1, 4):
            send_one(number)
    assert len(sandbox_ca.wait_for_messages(4)) == 4


@pytest.mark.django_db(transaction=True)
def test_save_and_delete_invalidate_the_cached_account(django_assert_num_queries: Any) -> None:
    account = make_account()
    assert accounts.account_options("shop")["port"] == 587
    with django_assert_num_queries(0):
        accounts.account_options("shop")
    account.timeout = 3
    account.save()
    assert accounts.account_options("shop")["timeout"] == 3.0
    account.delete()
    with pytest.raises(GmailConfigError, match="there is none"):
        accounts.account_options("shop")


@pytest.mark.django_db
def test_a_transaction_that_changed_accounts_does_not_fill_the_cache() -> None:
    """What a transaction reads after changing an account may be rolled back: not cached."""
    from django.test.utils import CaptureQueriesContext

    make_account()  # inside the test's transaction
    accounts.account_options("shop")
    with CaptureQueriesContext(connection) as queries:
        accounts.account_options("shop")
    assert any("gmail_smtp_gmailaccount" in query["sql"] for query in queries.captured_queries)


@pytest.mark.django_db(transaction=True)
def test_before_migrations_the_resolver_falls_back_to_settings(settings: Any) -> None:
    settings.GMAIL_SMTP = {"ACCOUNT": "shop"}
    with connection.schema_editor() as editor:
        editor.delete_model(GmailAccount)
    try:
        assert accounts.account_options("shop") is None
        config = conf.resolve({}, accounts=accounts.account_options)
        assert config.host == "smtp.gmail.com"
        assert config.provenance["host"].source == conf.SOURCE_DEFAULT
        assert "password" not in config.provenance
    finally:
        with connection.schema_editor() as editor:
            editor.create_model(GmailAccount)


@legacy_api
@pytest.mark.django_db(transaction=True)
def test_before_migrations_the_backend_sends_with_the_settings(sandbox_ca: Any, settings: Any) -> None:
    options = sandbox_ca.mailer_options("starttls")
    settings.GMAIL_SMTP = {"ACCOUNT": "shop", "SSL_CAFILE": sandbox_ca.ca_file}
    settings.EMAIL_HOST, settings.EMAIL_PORT = options["host"], options["port"]
    settings.EMAIL_HOST_USER, settings.EMAIL_HOST_PASSWORD = SANDBOX_USER, SANDBOX_PASSWORD
    settings.EMAIL_USE_TLS = True
    with connection.schema_editor() as editor:
        editor.delete_model(GmailAccount)
    try:
        backend = EmailBackend()
        assert backend.send_messages([mail.EmailMessage("Hi", "Body", SANDBOX_USER, ["a@example.com"])]) == 1
        assert backend.config.provenance["host"].source == conf.SOURCE_SETTINGS
    finally:
        with connection.schema_editor() as editor:
            editor.create_model(GmailAccount)
    sandbox_ca.wait_for_messages(1)


# -- two processes sharing a cache and a database -------------------------------------------

SETTINGS_MODULE = """
from tests.settings import *  # noqa: F403

DATABASES = {{"default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": {db!r}}}}}
CACHES = {{"default": {{"BACKEND": "django.core.cache.backends.filebased.FileBasedCache", "LOCATION": {cache!r}}}}}
"""

READER = """
import json, sys
import django
django.setup()
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django_gmail_smtp.accounts import account_options

for line in sys.stdin:
    with CaptureQueriesContext(connection) as queries:
        try:
            found = account_options("shop")
            answer = {"username": found["username"], "port": found["port"]}
        except Exception as exc:
            answer = {"error": type(exc).__name__}
    answer["queries"] = len(queries.captured_queries)
    print(json.dumps(answer), flush=True)
"""

WRITER = """
import sys
import django
django.setup()
from django.core.management import call_command
from django_gmail_smtp.models import GmailAccount

action = sys.argv[1]
if action == "create":
    call_command("migrate", verbosity=0)
    account = GmailAccount(name="shop", username="first@gmail.com")
    account.set_password("abcdefghijklmnop")
    account.save()
elif action == "update":
    account = GmailAccount.objects.get(name="shop")
    account.username, account.port = "second@gmail.com", 465
    account.set_password("abcdefghijklmnop")  # a new destination needs the secret again
    account.save()
elif action == "delete":
    GmailAccount.objects.get(name="shop").delete()
"""


def test_cache_invalidation_reaches_another_process(tmp_path: Path) -> None:
    """A long-running process keeps the account cached (0 queries) until another process changes it."""
    (tmp_path / "xproc_settings.py").write_text(
        SETTINGS_MODULE.format(db=str(tmp_path / "db.sqlite3"), cache=str(tmp_path / "cache"))
    )
    (tmp_path / "reader.py").write_text(textwrap.dedent(READER))
    (tmp_path / "writer.py").write_text(textwrap.dedent(WRITER))
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "xproc_settings",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
    }

    def write(action: str) -> None:
        subprocess.run([sys.executable, str(tmp_path / "writer.py"), action], env=env, check=True, timeout=60)

    write("create")
    reader = subprocess.Popen(
        [sys.executable, str(tmp_path / "reader.py")],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert reader.stdin is not None
    assert reader.stdout is not None

    def ask() -> dict[str, Any]:
        reader.stdin.write("get\n")  # type: ignore[union-attr]
        reader.stdin.flush()  # type: ignore[union-attr]
        return json.loads(reader.stdout.readline())  # type: ignore[union-attr,no-any-return]

    try:
        first = ask()
        assert first["username"] == "first@gmail.com"
        assert first["queries"] >= 1
        assert ask() == {"username": "first@gmail.com", "port": 587, "queries": 0}
        write("update")
        changed = ask()
        assert (changed["username"], changed["port"]) == ("second@gmail.com", 465)
        assert changed["queries"] >= 1
        assert ask()["queries"] == 0
        write("delete")
        assert ask()["error"] == "GmailConfigError"
    finally:
        reader.stdin.close()
        reader.wait(timeout=30)


@pytest.mark.django_db
def test_unknown_sign_in_method_is_the_resolvers_e017() -> None:
    """A method this version does not know (a newer version wrote it): E017, naming the account."""
    account = make_account()
    GmailAccount.objects.filter(pk=account.pk).update(auth_method="passkey")
    accounts.invalidate()
    with pytest.raises(GmailConfigError, match="'passkey' \\(from stored account 'shop'\\)") as info:
        conf.resolve({"account": "shop"}, accounts=accounts.account_options)
    assert info.value.check_id == "gmail_smtp.E017"
