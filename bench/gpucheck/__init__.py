"""The GPU acceptance run of a checkout, `bash bench/gpu_check.sh`: harness.py (the steps, their caps and the
table), checks.py (the steps that are fdsl's own, each run as `python3 -m bench.gpucheck.checks NAME`)."""
