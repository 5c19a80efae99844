#!/bin/sh
# A command for `orchestrator worker --exec`: the task's payload ({"who": "..."}) arrives
# as JSON on stdin; what it prints (JSON) becomes the step's output. A non-zero exit fails
# the attempt, with the end of stderr as its error.
who=$(sed -n 's/.*"who" *: *"\([^"]*\)".*/\1/p')
if [ -z "$who" ]; then
    echo "the payload names nobody to greet" >&2
    exit 2
fi
printf '{"greeting": "hello, %s!", "by": "%s"}\n' "$who" "$(hostname)"
