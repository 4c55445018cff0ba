"""``python -m certify`` runs the ``certify`` command (also under torchrun)."""

import sys

from certify.cli.certify import main

sys.exit(main())
