#!/usr/bin/env bash
# Set everything up, then run the test suite (extra arguments go to pytest).
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
"$PY" -m pytest -q "$@"
