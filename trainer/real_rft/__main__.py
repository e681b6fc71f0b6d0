import sys

from trainer.torch_import import import_torch

import_torch()  # before the service imports the guard (Ansible): trainer/torch_import.py
from trainer.real_rft.service import main  # noqa: E402

sys.exit(main())
