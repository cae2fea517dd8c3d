"""`python -m harness.bench overhead ...` (harness/bench/core.py main)."""
import sys

from harness.bench.core import main

sys.exit(main(sys.argv[1:]))
