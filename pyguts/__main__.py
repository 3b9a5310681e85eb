import sys

from pyguts.cli import main

sys.exit(main())
