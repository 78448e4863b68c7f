"""`python -m subnet.cli ...` is the `subnet` command."""
import sys

from . import main

sys.exit(main())
