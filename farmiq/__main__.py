import sys

from farmiq.cli import main

sys.exit(main())
