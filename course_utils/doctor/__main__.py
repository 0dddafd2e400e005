"""``python -m course_utils.doctor train.py [args]``: runs a script under the loop doctor."""

from __future__ import annotations

import runpy
import sys

from course_utils.doctor import watch


def main(argv: list[str]) -> int:
    """Runs the script ``argv[0]`` with arguments ``argv[1:]``; prints the findings once."""
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m course_utils.doctor script.py [args...]")
        return 0 if argv else 2
    sys.argv = list(argv)
    with watch():
        runpy.run_path(argv[0], run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
