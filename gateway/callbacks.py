"""``callback_url``: where the worker POSTs a signed copy of a finished job (see shared/webhooks.py)."""

from __future__ import annotations

from yarl import URL

from shared.errors import ValidationError
from shared.settings import Settings
from shared.urlguard import UrlAllowlist, check_url


def parse_callback_url(value: object, settings: Settings) -> str | None:
    """A webhook URL, checked by the SSRF guard now (and again by the worker when it delivers)."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 2048:
        raise ValidationError("callback_url must be an http(s) URL")
    try:
        url = URL(value.strip())
    except ValueError as exc:
        raise ValidationError(f"callback_url is not a valid URL: {exc}") from exc
    check_url(url, UrlAllowlist(settings.effective_url_allowlist()))
    return str(url)
