import sys

from kvstore.bench.cli import main

sys.exit(main())
