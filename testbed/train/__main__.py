"""``python -m testbed.train --role ...``: see :mod:`testbed.train.cli`."""

import sys

from testbed.train.cli import main

if __name__ == "__main__":
    sys.exit(main())
