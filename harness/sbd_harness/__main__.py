import sys

from sbd_harness.cli import main

sys.exit(main())
