"""``python -m jaxrl_align``: the ``jaxrl-align`` command."""

import sys

from jaxrl_align.host.cli import main

sys.exit(main())
