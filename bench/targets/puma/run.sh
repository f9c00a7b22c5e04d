#!/bin/sh
# Starts Puma on 127.0.0.1:$PORT with its pidfile at $PIDFILE, in cluster
# mode with $WORKERS workers when set.
exec puma -b "tcp://127.0.0.1:$PORT" --pidfile "$PIDFILE" -t 4:4 ${WORKERS:+-w "$WORKERS"} "$(dirname "$0")/config.ru"
