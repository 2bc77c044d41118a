import sys

from selectit.cli import main

sys.exit(main())
