"""``python -m speechbrain_elbo.minidata``: builds MiniVB and/or MiniWHAMR.

See :func:`speechbrain_elbo.minidata.builders.main` (``--help`` lists the
options).
"""

from speechbrain_elbo.minidata.builders import main

if __name__ == "__main__":
    main()
