"""``python -m streamclust``: the command line."""

from .cli import main

raise SystemExit(main())
