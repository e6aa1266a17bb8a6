"""`python -m interlock` runs the command line."""

import sys

from interlock.cli import main

sys.exit(main())
