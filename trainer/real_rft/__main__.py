import sys

from trainer.real_rft.service import main

sys.exit(main())
