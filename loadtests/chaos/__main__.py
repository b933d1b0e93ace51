import sys

from loadtests.chaos.run import main

sys.exit(main())
