"""Request types and names as they appear in Locust's stats, CSV and web UI.

They are an interface: the bench runner reads the CSV rows by these names, so change them only
together with it (and loadtests/README.md).
"""

WS = "WS"  # request type of every WebSocket event

# HTTP rows use the endpoint's path as the name; the key is what --http-endpoints accepts.
HTTP_ENDPOINTS: dict[str, str] = {
    "ping": "/api/ping",
    "ping-sync": "/api/ping-sync",
    "db": "/api/db",
    "static": "/static/chat/chat.css",
}
# The endpoints a server variant answers. Nginx serves the static file by itself, the same in every
# variant's stack, so the bench measures it once, in its ceiling stage.
APP_ENDPOINTS: tuple[str, ...] = ("ping", "ping-sync", "db")

ECHO_PATH = "/ws/echo/"
CHAT_PATH_LABEL = "/ws/chat/[room]/"  # one row for every room, not one per room

ECHO_ROUND_TRIP = "echo round trip"
CHAT_JOIN = "chat join"  # handshake start → history frame received
CHAT_ACK = "chat ack round trip"  # send → the sender's own copy of its message
CHAT_DELIVERY = "chat fan-out delivery"  # send (sender's wall clock) → receipt by another member
CHAT_ERROR = "chat error frame"


def ws_connect(path_label: str) -> str:
    """Handshake (TCP connect + HTTP upgrade) of a socket to ``path_label``."""
    return f"connect {path_label}"


def ws_disconnect(path_label: str) -> str:
    """A socket the server (or the network) closed while the user still wanted it."""
    return f"disconnect {path_label}"


def ws_error(path_label: str) -> str:
    """An error frame on a socket whose scenario has no more specific row for it."""
    return f"error frame {path_label}"


# The soak scenario: every HTTP endpoint of the stack (rows named by path), and its session rows.
SOAK_HTTP_PATHS: tuple[str, ...] = (
    "/",
    "/healthz",
    "/readyz",
    "/api/ping",
    "/api/ping-sync",
    "/api/db",
    "/api/whoami",
    "/static/chat/chat.css",
)
SOAK_LEAVES: tuple[str, ...] = ("clean", "reset", "mid-message")
SOAK_JOIN = "soak join"  # handshake start → the room's history frame
SOAK_ACK = "soak ack round trip"  # send → the sender's own copy


def soak_leave(how: str) -> str:
    """A session that ended ``how`` (clean, reset, mid-message); its time is the session's length."""
    return f"soak leave {how}"
