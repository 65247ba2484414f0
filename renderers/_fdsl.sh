# Sourced by the renderer scripts: how to call fdsl (installed console script, or the checkout).
if [ -z "${FDSL:-}" ]; then
  if command -v fdsl >/dev/null 2>&1; then FDSL=fdsl
  else FDSL="python3 -m fdsl"; export PYTHONPATH="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)${PYTHONPATH:+:$PYTHONPATH}"
  fi
fi
WORKERS=${WORKERS:-$(nproc)}
