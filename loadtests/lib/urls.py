"""The one base URL the user gives, and everything the WebSocket side derives from it.

Only the base URL names a target: the default is the local dev server, and nothing here knows
any other address.
"""

from urllib.parse import urlencode, urlsplit, urlunsplit

DEFAULT_BASE_URL = "http://127.0.0.1:8000"

_WS_SCHEME = {"http": "ws", "https": "wss"}
_HTTP_SCHEME = {"http": "http", "https": "https", "ws": "http", "wss": "https"}
_DEFAULT_PORT = {"http": 80, "https": 443}


def normalize_base_url(url: str | None) -> str:
    """``http(s)://host[:port][/prefix]`` without a trailing slash; the default when empty."""
    raw = (url or "").strip() or DEFAULT_BASE_URL
    parts = urlsplit(raw)
    if parts.scheme not in _WS_SCHEME or not parts.hostname:
        raise ValueError(f"base URL must look like http://host[:port][/prefix], got {raw!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"base URL must not carry a query or fragment, got {raw!r}")
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def ws_base_url(base_url: str | None) -> str:
    """The WebSocket base for an HTTP base URL: http→ws, https→wss, same host, port and prefix."""
    parts = urlsplit(normalize_base_url(base_url))
    return urlunsplit((_WS_SCHEME[parts.scheme], parts.netloc, parts.path, "", ""))


def normalize_ws_url(url: str) -> str:
    """Validate an explicit ``ws(s)://`` base (an override, e.g. a server port without Nginx)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"WebSocket URL must look like ws://host[:port][/prefix], got {url!r}")
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def origin_of(url: str | None) -> str:
    """The ``Origin`` a browser showing a page at ``url`` sends: scheme://host[:port].

    As in browsers, the default port is left out and the host is lower-cased; a ws(s) URL maps to
    the http(s) origin, since a page is never served from a ws:// origin. The app's origin check
    compares this header with its allowed hosts, so it must look exactly like a browser's.
    """
    parts = urlsplit((url or "").strip() or DEFAULT_BASE_URL)
    scheme = _HTTP_SCHEME.get(parts.scheme)
    if scheme is None or not parts.hostname:
        raise ValueError(f"cannot derive an origin from {url!r}")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    port = parts.port
    if port is None or port == _DEFAULT_PORT[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def join_url(base: str, path: str, query: dict[str, str] | None = None) -> str:
    """``base`` (which may carry a path prefix) joined with an absolute app path."""
    url = base.rstrip("/") + "/" + path.lstrip("/")
    return f"{url}?{urlencode(query)}" if query else url
