import sys

from invprop.entry import main

sys.exit(main())
