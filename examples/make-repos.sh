#!/bin/bash
# make-repos.sh DEST [APP...]: make a bare git repository DEST/<app>.git for
# each example app (default: all of examples/apps), holding one commit of the
# app's files on refs/heads/main, and print "<app> <commit>" per line.
#
# The commits are reproducible - fixed author, committer and dates - so the
# deploy requests in examples/jobs/ can name them.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dest=${1:?usage: make-repos.sh DEST [APP...]}
shift
apps=("$@")
[ ${#apps[@]} -gt 0 ] || apps=($(cd "$here/apps" && ls))
mkdir -p "$dest"
export GIT_AUTHOR_NAME=buildvm GIT_AUTHOR_EMAIL=examples@buildvm.invalid
export GIT_COMMITTER_NAME=buildvm GIT_COMMITTER_EMAIL=examples@buildvm.invalid
export GIT_AUTHOR_DATE='2026-01-01T00:00:00Z' GIT_COMMITTER_DATE='2026-01-01T00:00:00Z'
for app in "${apps[@]}"; do
    src=$here/apps/$app
    [ -f "$src/buildvm.json" ] || [ -f "$src/Dockerfile" ] || { echo "make-repos: no example app \`$app\`" >&2; exit 1; }
    repo=$dest/$app.git
    rm -rf "$repo"
    git init -q --bare -b main "$repo"
    idx=$(mktemp)
    rm -f "$idx"
    # only the app's own files: what the source tree tracks when it is a git
    # checkout, everything otherwise (never build outputs left lying around)
    if git -C "$here/.." rev-parse --git-dir >/dev/null 2>&1 \
        && [ -n "$(git -C "$here/.." ls-files "examples/apps/$app")" ]; then
        files=$(git -C "$src" ls-files)
    else
        files=$(cd "$src" && find . -type f -o -type l | sed 's|^\./||' | sort)
    fi
    (cd "$src" && echo "$files" | GIT_DIR=$repo GIT_WORK_TREE=$src GIT_INDEX_FILE=$idx git update-index --add --stdin)
    tree=$(GIT_DIR=$repo GIT_INDEX_FILE=$idx git write-tree)
    commit=$(echo "example: $app" | GIT_DIR=$repo git commit-tree "$tree")
    GIT_DIR=$repo git update-ref refs/heads/main "$commit"
    rm -f "$idx"
    echo "$app $commit"
done
