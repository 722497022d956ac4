import sys

from convemerge.cli import main

sys.exit(main())
