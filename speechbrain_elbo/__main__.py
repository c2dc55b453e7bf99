"""``python -m speechbrain_elbo``: the ``speechbrain-elbo-enhance`` command.

See :mod:`speechbrain_elbo.cli`.
"""

import sys

from speechbrain_elbo.cli import main

if __name__ == "__main__":
    sys.exit(main())
