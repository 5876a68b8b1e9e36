#!/bin/sh
# The template must contain the title placeholder exactly once.
set -eu
n=$(grep -c '@TITLE@' src/index.html.in)
[ "$n" -eq 2 ] || { echo "expected the title placeholder twice, found $n"; exit 1; }
echo "tests passed"
