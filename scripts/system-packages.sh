#!/usr/bin/env bash
# Print the Debian packages of system-packages.txt, one a line: every group, or
# only the groups named. Install them with
#   scripts/system-packages.sh | xargs apt-get install -y --no-install-recommends
#   scripts/system-packages.sh unit | sudo xargs apt-get install -y --no-install-recommends
# An unknown group prints nothing and fails (exit 2), naming the groups there are.
# A package's line may name a command after it: the package is printed only
# where that command is missing (NodeSource's nodejs brings npm and conflicts
# with Debian's npm package).
set -euo pipefail
list="$(dirname "$0")/../system-packages.txt"
[ -r "$list" ] || { echo "system-packages.sh: cannot read $list" >&2; exit 2; }
awk -v wanted="$*" '
  BEGIN { n = split(wanted, names, " "); for (i = 1; i <= n; i++) want[names[i]] = 1 }
  /^[[:space:]]*(#|$)/ { next }
  /^\[[a-z0-9-]+\][[:space:]]*$/ {
    group = substr($1, 2, length($1) - 2); known[group] = 1; groups = groups " " group; next
  }
  group == "" { printf "system-packages.sh: %s comes before any [group] in %s\n", $1, FILENAME > "/dev/stderr"; bad = 1; exit }
  n == 0 || (group in want) {
    if (NF > 1 && system("command -v " $2 " >/dev/null 2>&1") == 0) next
    picked[++count] = $1
  }
  END {
    if (bad) exit 2
    for (i = 1; i <= n; i++) if (!(names[i] in known)) missing = missing " " names[i]
    if (missing != "") {
      printf "system-packages.sh: no such group:%s (the groups of %s:%s)\n", missing, FILENAME, groups > "/dev/stderr"
      exit 2
    }
    for (i = 1; i <= count; i++) print picked[i]
  }
' "$list"
