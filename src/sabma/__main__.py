import sys

from sabma.cli.main import main

sys.exit(main())
