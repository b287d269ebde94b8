"""`python -m lorarepro ...`: the same as the `lorarepro` console script."""
import sys

from lorarepro.pipeline.cli import main

sys.exit(main())
