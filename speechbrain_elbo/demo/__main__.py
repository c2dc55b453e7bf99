"""``python -m speechbrain_elbo.demo``: see :mod:`speechbrain_elbo.demo.cli`."""

import sys

from speechbrain_elbo.demo.cli import main

if __name__ == "__main__":
    sys.exit(main())
