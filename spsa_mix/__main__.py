import sys

from spsa_mix.cli import main

sys.exit(main())
