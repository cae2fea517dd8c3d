#!/usr/bin/env bash
# The previous night's merged reports of $HARNESS_ENV (artifact reports-$HARNESS_ENV of the last
# completed nightly run on this branch) into previous/: previous/$HARNESS_ENV/results.json and
# previous/benchmarks/. Nothing there on the first night; that is not an error.
# Needs GH_TOKEN (actions: read).
set -euo pipefail
prev=$(gh run list --workflow nightly.yml --branch "${GITHUB_REF_NAME}" --status completed \
         --limit 10 --json databaseId \
         --jq "[.[] | select(.databaseId != ${GITHUB_RUN_ID})][0].databaseId // empty")
if [ -n "$prev" ] && gh run download "$prev" --name "reports-${HARNESS_ENV}" --dir previous; then
  echo "previous night: run $prev"
else
  echo "no previous night to compare with"
fi
