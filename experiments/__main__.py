"""`python -m experiments`: what `make results` runs."""
from .runner import main

raise SystemExit(main())
