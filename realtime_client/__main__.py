"""``python -m realtime_client``: the debugging command line (:mod:`realtime_client.cli`)."""

import sys

from realtime_client.cli import main

sys.exit(main())
