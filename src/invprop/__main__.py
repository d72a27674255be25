import sys

from invprop.cli import main

sys.exit(main())
