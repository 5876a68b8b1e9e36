#!/bin/sh
# The runtime tree: the app and its installed dependencies, without npm's
# .bin links (nothing here runs them).
set -eu
rm -rf dist
mkdir -p dist
cp server.js package.json package-lock.json dist/
cp -R node_modules dist/
rm -rf dist/node_modules/.bin
echo "built: $(ls dist/node_modules | wc -l) packages"
