#!/bin/sh
# As the rabbitmq image starts it: rabbitmq-server as the rabbitmq user and as PID 1, so SIGTERM stops the node
# (Debian's /usr/sbin wrapper would stay PID 1 behind `su` and ignore it).
set -eu
if [ "$1" = rabbitmq-server ] && [ "$(id -u)" = 0 ]; then
  chown -R rabbitmq:rabbitmq /var/lib/rabbitmq
  shift
  exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups /usr/lib/rabbitmq/bin/rabbitmq-server "$@"
fi
exec "$@"
