"""deploy/servers.txt, the registry of server variants, read in one place for all Python code."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVERS_FILE = ROOT / "deploy" / "servers.txt"


def registry(path: Path = SERVERS_FILE) -> dict[str, str]:
    """Each variant, in the file's order, and the variant that serves its WebSockets (itself, or
    the sidecar of a WSGI-only variant)."""
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        fields = line.split()
        if fields and not fields[0].startswith("#"):
            found[fields[0]] = fields[1]
    return found


def variants() -> list[str]:
    """The variant names, in the registry's order."""
    return list(registry())


def selected_variants(variable: str, default: str) -> list[str]:
    """The variants named in the environment variable ``variable`` (else in ``default``), separated
    by commas or spaces, in the order given; ``all`` names every variant. An unknown name is a
    ValueError that lists the valid ones."""
    raw = os.environ.get(variable) or default
    known = variants()
    chosen = raw.replace(",", " ").split()
    if chosen == ["all"]:
        return known
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        raise ValueError(f"{variable}: unknown variant(s) {unknown}; valid: {', '.join(known)} or all")
    return chosen
