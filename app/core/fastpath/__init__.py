"""Django's request path under ASGI without per-request thread hops (``ASGI_FAST_PATH``, on by default).

- ``handler``: ``FastASGIHandler``, Django's ``ASGIHandler`` with pooled request threads.
- ``threads``: the pool, and the per-request executor that borrows from it.
- ``signals``: Django's database receivers of the request signals, moved onto the request thread.
- ``middleware``: Django's security, CSRF and clickjacking middleware with their hooks run inline.
"""
