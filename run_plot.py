#!/usr/bin/env python
"""Draw and tabulate active-learning results (``fkal.reporting.cli``): ``python run_plot.py --help``."""
import sys

from fkal.launch import plot_main

if __name__ == "__main__":
    sys.exit(plot_main())
