"""`python -m scan_keras` runs the `scan-keras` command."""

import sys

from scan_keras.cli import main

sys.exit(main())
