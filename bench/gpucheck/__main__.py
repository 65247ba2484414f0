"""python3 -m bench.gpucheck: what bench/gpu_check.sh runs, after installing the travelling wheels."""
import sys

from bench.gpucheck.harness import main

sys.exit(main())
