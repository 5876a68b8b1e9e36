#!/bin/sh
# Builds a static site into dist/ and a build report into reports/.
set -eu
mkdir -p dist/www dist/bin reports
sed "s/@TITLE@/$SITE_TITLE/" src/index.html.in > dist/www/index.html
cp src/healthcheck.sh dist/bin/healthcheck
chmod 0755 dist/bin/healthcheck
ln -sf www/index.html dist/index.html
{
  echo "built by: $(id -un) ($(id -u))"
  echo "files: $(find dist -type f | wc -l)"
  echo "bytes: $(cat dist/www/index.html | wc -c)"
} > reports/build.txt
echo "site built: $(wc -c < dist/www/index.html) bytes"
