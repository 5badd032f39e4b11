"""`python -m jaxpde ...` runs the `jaxpde` command line."""

import sys

from .cli import main

sys.exit(main())
