"""`python -m remed_daemon ...` is `remed ...` (the umbrella command, remed_cli), so service
units and scripts that start the daemon this way keep working."""

import sys

from remed_cli import main

sys.exit(main())
