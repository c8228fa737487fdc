"""``python -m gateway`` is the ``postdesk`` command."""
import sys

from gateway.cli import main

sys.exit(main())
