"""``python -m loadtests.bench [OPTIONS]`` runs the bench; ``... report DIR`` renders a report again;
``... compare DIR DIR`` sets the medians of two bench runs side by side (markdown on stdout).

Exit status: 0 when every run produced figures, 1 when some did not (see the report's errors),
2 for a bad setting, 128 + the signal's number when interrupted (the stack is down either way).
"""

import sys
from pathlib import Path

from loadtests.bench import config, report, verdicts
from loadtests.bench.results import Results
from loadtests.bench.runner import Bench, new_output_dir


def main(argv: list[str]) -> int:
    if argv[:1] == ["report"]:
        if len(argv) != 2 or not (Path(argv[1]) / "results.json").is_file():
            print(
                "usage: python -m loadtests.bench report RESULTS_DIR (a folder holding results.json)",
                file=sys.stderr,
            )
            return 2
        for path in report.render(Path(argv[1])):
            print(path)
        return 0
    if argv[:1] == ["compare"]:
        dirs = [Path(arg) for arg in argv[1:]]
        if len(dirs) != 2 or not all((d / "results.json").is_file() for d in dirs):
            print("usage: python -m loadtests.bench compare RESULTS_DIR RESULTS_DIR", file=sys.stderr)
            return 2
        first, second = (Results.load(d) for d in dirs)
        print(verdicts.agreement_markdown(first, second), end="")
        return 0
    try:
        settings = config.load(argv)
    except config.ConfigError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    out_dir = new_output_dir(settings.output)
    return Bench(settings, out_dir, argv).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
