"""`python -m federa` runs the command line."""

import sys

from federa.cli.main import main

sys.exit(main())
