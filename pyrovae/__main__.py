"""``python -m pyrovae`` runs the command line."""

import sys

from pyrovae.cli import main

sys.exit(main())
