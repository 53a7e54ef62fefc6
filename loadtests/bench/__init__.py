"""The side-by-side comparison of every server variant (``make bench``), and ``make loadtest``.

    python -m loadtests.bench                      # every variant, results/<timestamp>/report.md
    python -m loadtests.bench report results/<timestamp>   # render the report again from results.json
    python -m loadtests.bench.loadtest --server uvicorn --scenario echo

Pure modules (no Docker, no Locust import): ``config``, ``stats``, ``analysis``, ``locust_csv``,
``wrk``, ``progress``, ``report`` and ``charts``. The rest drives processes: ``procs`` (children,
signals), ``stack`` (the compose stack through the Makefile), ``machine`` (what the report records
about the host and the stack), ``runner`` (the bench) and ``loadtest``.
"""
