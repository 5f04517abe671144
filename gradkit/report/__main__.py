"""``python -m gradkit.report [name ...]``: build the HTML reports (see :mod:`gradkit.report`)."""

import sys

from gradkit.report.runner import main

sys.exit(main())
