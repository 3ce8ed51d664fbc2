#!/usr/bin/env python
"""Label the next batch on your own images (``fkal.labeling.cli``): ``python label_next.py --help``."""
import sys

from fkal.launch import label_main

if __name__ == "__main__":
    sys.exit(label_main())
