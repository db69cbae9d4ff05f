#!/usr/bin/env bash
# Back-to-back A/B of the fan-out step: the working tree against a git ref, alternating, N pairs.
#
# On a small shared machine identical runs differ by 2x in p99 (the machine's state drifts over minutes), so a
# change is judged by pairs run one right after the other, never by runs minutes apart. Each pair runs the
# working tree first, then the ref (checked out in a temporary worktree that shares node_modules).
#
# usage: test/bench/ab.sh <git-ref> [pairs=3] [extra bench args, e.g. --rates=1000 --step-sec=20]
# env:   AB_NEW_ENV / AB_BASE_ENV  "VAR=value ..." set for one side only (A/B of a setting on the same code:
#        pass HEAD as the ref)
set -euo pipefail
ref=${1:?usage: test/bench/ab.sh <git-ref> [pairs] [bench args]}
pairs=${2:-3}
shift $(( $# >= 2 ? 2 : 1 ))
repo=$(cd "$(dirname "$0")/../.." && pwd)
base=$(mktemp -d /tmp/fractal-ab-XXXXXX)
cleanup() { git -C "$repo" worktree remove --force "$base" >/dev/null 2>&1 || true; rm -rf "$base"; }
trap cleanup EXIT
git -C "$repo" worktree add --detach --force "$base" "$ref" >/dev/null
ln -s "$repo/node_modules" "$base/node_modules"
# The full mode's warm-up: JIT compilation during a short one adds ~10 % CPU that has nothing to do with the change.
args=("--phases=fanout" "--systems=fractal" "--rates=1000" "--warmup-sec=20" "$@")
run() { # side dir env
  local out err
  out=$(mktemp); err=$(mktemp)
  (cd "$2" && env $3 npm run --silent bench -- "${args[@]}" >"$out" 2>"$err") || true
  local line
  line=$(grep -m1 "msg/s: sent" "$err" | sed 's/.*p50/p50/; s/, load CPU.*//; s/ (per server[^)]*)//') || true
  printf '%-5s %s\n' "$1" "${line:-no result (see $err)}"
  rm -f "$out"
  [ -n "$line" ] && rm -f "$err"
  return 0
}
echo "A/B of the fan-out step: new = working tree, base = $ref; ${args[*]}"
for i in $(seq 1 "$pairs"); do
  run new "$repo" "${AB_NEW_ENV:-}"
  run base "$base" "${AB_BASE_ENV:-}"
done
