import sys

from finmeta.cli import main

sys.exit(main())
