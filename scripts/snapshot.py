#!/usr/bin/env python3
"""Snapshots of the codex brain database and code tree; see docs/snapshot.md (`snapshot.py --help`)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tzcrawl.snapshot.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
