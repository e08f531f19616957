#!/bin/sh
# A CI check for the fleet's topology file: validate it, then show what the
# change does to every node against the target branch. Any CI system can run
# it from the repository's root; it needs `lvn` on PATH and git history of
# the target branch (fetch-depth 0 or a fetch of it).
#
#   TOPOLOGY=topology.toml TARGET=origin/main examples/ci/lvn-diff.sh
#
# Writes the Markdown report to ${REPORT:-lvn-diff.md}. Exits 1 if the file
# is invalid, 0 otherwise (a change is not a failure: a reviewer reads it).
set -eu
topology=${TOPOLOGY:-topology.toml}
target=${TARGET:-origin/main}
report=${REPORT:-lvn-diff.md}

lvn check --config "$topology"

old=$(mktemp)
trap 'rm -f "$old"' EXIT
if git show "$target:$topology" >"$old" 2>/dev/null; then
    set +e
    lvn diff "$old" "$topology" --markdown --detailed-exitcode >"$report"
    rc=$?
    set -e
    case $rc in
        0) echo "no node changes" ;;
        2) echo "nodes change: see $report" ;;
        *) exit 1 ;;
    esac
else
    printf '### lvn diff\n\n`%s` is new on this branch: every node is added.\n' "$topology" >"$report"
fi
cat "$report"
