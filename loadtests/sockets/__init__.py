"""How many idle chat sockets a stack holds: ``python -m loadtests.sockets`` (see __main__)."""
