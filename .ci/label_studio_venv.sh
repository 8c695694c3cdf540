#!/usr/bin/env bash
# Label Studio in its own virtual environment, outside the repository (about 1 GB; its Django stack
# would clash with nothing here, but it has no business in the project's venv). Idempotent: a stamp
# file records the version and how long the install took. Used by the live round-trip test
# (tests/labeling/test_labeling_labelstudio_live.py) and benchmarks/bench_labelstudio.py.
set -euo pipefail
VENV="${CLOSEDLOOP_LABEL_STUDIO_VENV:-$HOME/.cache/closedloop/label-studio-venv}"
VERSION="${LABEL_STUDIO_VERSION:-1.23.2}"
# sentry-sdk 3 (December 2026) refuses the option Label Studio 1.23 passes it at start-up ("Unknown option
# 'send_default_pii'"): keep its dependency on the 2.x line; the stamp names the constraint so an older venv is redone
SENTRY='sentry-sdk<3'
STAMP="$VENV/.installed-$VERSION-sentry2"
[ -f "$STAMP" ] && exit 0
start=$(date +%s)
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "label-studio==$VERSION" "$SENTRY"
echo "label-studio $VERSION installed in $(( $(date +%s) - start )) s" > "$STAMP"
cat "$STAMP"
