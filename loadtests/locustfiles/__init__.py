"""One locustfile per scenario; ``loadtests/locustfile.py`` picks one by ``SCENARIO``."""
