import sys

from allegro.cli import main

sys.exit(main())
