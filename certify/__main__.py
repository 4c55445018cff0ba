"""``python -m certify`` runs the ``certify`` command (also under torchrun)."""

import sys

from certify.cli.startup import certify

sys.exit(certify())
