# Sourced by the script tests (tests/apps, tests/dist), so each does not restate it:
#   begin_checks NAME   W: a new folder /tmp/NAME.XXXXXX, removed when the script exits
#   ok TEXT / bad TEXT  one line per check; bad counts a failure
#   end_checks WHAT     the closing line; exit status 0 only when no check failed
begin_checks() {
  W=$(mktemp -d "/tmp/$1.XXXXXX")
  trap 'rm -rf "$W"' EXIT
  fails=0
}
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }
end_checks() {
  if [ "$fails" -eq 0 ]; then
    echo "all $1 checks passed"
    exit 0
  fi
  echo "$fails $1 check(s) failed"
  exit 1
}
