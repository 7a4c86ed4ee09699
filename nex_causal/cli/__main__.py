"""``python -m nex_causal.cli``: the ``nex-causal`` command."""

import sys

from nex_causal.cli import main

sys.exit(main())
