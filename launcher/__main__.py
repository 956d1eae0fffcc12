"""``python -m launcher``: see launcher/main.py."""

import sys

from launcher.main import main

sys.exit(main())
