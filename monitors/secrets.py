"""One place that hides secrets in what operators see: URLs lose their userinfo password
and their query values (tokens are commonly passed as ``?token=...``), so a webhook URL or
an endpoint can be logged, kept in history, written into the outbox and STATUS= without
leaking a credential."""
from __future__ import annotations

import re
import urllib.parse

MASK = "***"

# scheme://user:password@  and  ?key=value&key2=value2 inside free text (log lines, API
# answers, exception messages that quote a URL).
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")
# a bare path with a query, as requests quotes it ("Max retries exceeded with url: /x?t=1")
_PATH_QUERY = re.compile(r"(?<![\w/:])(/[^\s?'\"<>]*)\?([^\s'\"<>()]+)")


def mask_url(url: str) -> str:
    """The URL with its password and every query value replaced by ***."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, sep, _ = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{hostport}" if sep else f"{MASK}@{hostport}"
    query = parts.query
    if query:
        query = "&".join(f"{k}={MASK}" if sep else k for k, sep, _ in
                         (item.partition("=") for item in query.split("&")))
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def mask_text(text: str) -> str:
    """Every URL inside a free text masked as mask_url does."""
    if not text or ("://" not in text and "?" not in text):
        return text
    text = _URL.sub(lambda m: mask_url(m.group(0)), text)
    return _PATH_QUERY.sub(lambda m: mask_url(m.group(0)), text)
