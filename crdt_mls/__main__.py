"""``python -m crdt_mls [demo | any crdt-mls command]`` (docs/cli.md)."""

from __future__ import annotations

import sys

from crdt_mls.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["demo"]))
