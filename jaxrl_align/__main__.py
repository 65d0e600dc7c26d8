"""``python -m jaxrl_align``: the ``jaxrl-align`` command."""

import sys

from jaxrl_align.host.launch import main

sys.exit(main())
