"""``python -m pytest_migsafe.cli``: the ``migsafe`` command (:func:`pytest_migsafe.cli.main.main`)."""

import sys

from pytest_migsafe.cli.main import main

sys.exit(main())
