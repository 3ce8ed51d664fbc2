"""Label the next batch on your own images: ``python label_next.py --help``."""
import sys

from fkal.labeling.cli import main

if __name__ == "__main__":
    sys.exit(main())
