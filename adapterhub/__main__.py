"""``python -m adapterhub``: the same CLI as the ``adapterhub`` console script."""

from adapterhub.cli.main import main

raise SystemExit(main())
