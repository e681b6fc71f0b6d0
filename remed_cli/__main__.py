"""`python -m remed_cli ...` is `remed ...`."""

import sys

from remed_cli import main

sys.exit(main())
