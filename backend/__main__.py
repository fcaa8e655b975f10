import sys

from .main import serve_main

sys.exit(serve_main())
