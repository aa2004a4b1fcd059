"""`python -m fedp2p` runs the same CLI as the `fedp2p` console script."""

from fedp2p.cli import main

raise SystemExit(main())
