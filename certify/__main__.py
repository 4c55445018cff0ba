"""``python -m certify`` runs the ``certify`` command (also under torchrun)."""

import sys

from certify.cli import main

sys.exit(main())
