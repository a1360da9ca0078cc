"""Command-line interface: ``python -m twolayer_ext`` / ``twolayer-ext``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``twolayer-ext`` console script."""
    parser = argparse.ArgumentParser(prog="twolayer-ext", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print build_info() as JSON")
    args = parser.parse_args(argv)

    import twolayer_ext

    if args.command == "info":
        print(json.dumps(twolayer_ext.build_info(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
