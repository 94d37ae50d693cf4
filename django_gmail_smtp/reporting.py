"""An exception reporter filter that also hides passwords inside URLs and this app's secrets.

Django's ``SafeExceptionReporterFilter`` hides a setting or an environment variable (shown in
``request.META`` under ``runserver``) by its *name* only: ``EMAIL_HOST_PASSWORD`` is hidden, but
``EMAIL_URL = "smtp+tls://me%40gmail.com:apppassword@smtp.gmail.com:587"`` (the form the README
recommends, through django-environ) is shown in full on the debug page and in the error
e-mails to ``ADMINS``. Use this subclass instead::

    DEFAULT_EXCEPTION_REPORTER_FILTER = "django_gmail_smtp.reporting.SafeExceptionReporterFilter"

On top of what Django's filter does, it hides

* the password of every ``scheme://user:password@host`` URL in settings (at any depth of dicts,
  lists and tuples), in ``request.META`` (so the environment under ``runserver``) and cookies,
  and, while the filter is active (``DEBUG = False``), in the string values of frame variables;
* every secret this app is configured with (:func:`~django_gmail_smtp.conf.configured_secrets`:
  app passwords, OAuth2 client secrets and refresh tokens, encryption keys), in any encoding
  :class:`~django_gmail_smtp.redaction.Redactor` knows, wherever it appears in those values,
  whatever the name it sits under.

Secrets of accounts stored in the database are not looked up (a report must not depend on the
database); they never appear in settings, and the backend keeps them out of tracebacks.
"""

from __future__ import annotations

import re
from typing import Any

from django.views import debug

from .conf import configured_secrets
from .redaction import Redactor

__all__ = ["PATH", "SafeExceptionReporterFilter", "hide_url_passwords"]

PATH = "django_gmail_smtp.reporting.SafeExceptionReporterFilter"
"""The value for ``DEFAULT_EXCEPTION_REPORTER_FILTER``."""

# scheme://netloc: the netloc ends at the first "/", "?", "#" or white space.
_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://(?P<netloc>[^\s/?#]+)")


def hide_url_passwords(text: str, substitute: str) -> str:
    """``text`` with the password of every ``scheme://user:password@host`` replaced by ``substitute``.

    The user info ends at the last ``@`` of the host part, as ``urllib.parse`` reads it, so a
    password holding an unencoded ``@`` is hidden whole.
    """

    def hide(match: re.Match[str]) -> str:
        userinfo, at, host = match.group("netloc").rpartition("@")
        user, colon, password = userinfo.partition(":")
        if not at or not colon or not password:
            return match.group(0)
        return f"{match.group('scheme')}://{user}:{substitute}@{host}"

    return _URL.sub(hide, text) if "://" in text else text


class SafeExceptionReporterFilter(debug.SafeExceptionReporterFilter):
    """Django's filter, plus passwords inside URLs and this app's configured secrets (see the module)."""

    _known: tuple[tuple[str, ...], Redactor] = ((), Redactor())

    def _secrets(self) -> Redactor:
        # Django keeps one instance of the filter for the process: read the secrets every time
        # (settings and the environment may change), build a new redactor only when they did.
        known, redactor = self._known
        try:
            secrets = tuple(configured_secrets())
        except Exception:  # a broken setting must not stop the report that may explain it
            secrets = known
        if secrets != known:
            redactor = Redactor(*secrets, substitute=self.cleansed_substitute)
            self._known = (secrets, redactor)
        return redactor

    def _hide(self, value: Any) -> Any:
        """``value`` with URL passwords and known secrets hidden, recursing into dicts, lists and tuples."""
        if isinstance(value, str):
            return self._secrets()(hide_url_passwords(value, self.cleansed_substitute))
        if isinstance(value, dict):
            return {key: self._hide(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self._hide(item) for item in value]
        if isinstance(value, tuple):
            return tuple(self._hide(item) for item in value)
        return value

    def cleanse_setting(self, key: Any, value: Any) -> Any:
        """Settings, ``request.META`` and cookies: Django's rule by name, then by value."""
        cleansed = super().cleanse_setting(key, value)
        return self._hide(cleansed) if isinstance(cleansed, str) else cleansed

    def get_traceback_frame_variables(self, request: Any, tb_frame: Any) -> Any:
        variables = super().get_traceback_frame_variables(request, tb_frame)
        if not self.is_active(request):  # DEBUG = True: Django shows frame variables as they are
            return variables
        return [(name, self._hide(value)) for name, value in variables]
