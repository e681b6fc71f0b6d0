import sys

from remed_daemon.cli import main

sys.exit(main())
