"""``python -m fedrag_flower.cli ...``: the ``fedrag-flower`` command without its script."""

import sys

from fedrag_flower.cli import main

sys.exit(main())
