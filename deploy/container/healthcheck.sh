#!/bin/bash
# wren-healthcheck: the image's HEALTHCHECK. Healthy (exit 0) when the
# --metrics endpoint at 127.0.0.1:$WREN_METRICS_PORT (default 9100) answers
# GET /metrics with status 200 within 5 s; else exit 1 and say why on stderr.
# Plain bash (/dev/tcp): the image carries no HTTP client.
set -u
port=${WREN_METRICS_PORT:-9100}
host=${WREN_METRICS_HOST:-127.0.0.1}
if ! exec 3<>"/dev/tcp/$host/$port"; then
    echo "wren-healthcheck: nothing listens on $host:$port (--metrics $host:$port?)" >&2
    exit 1
fi
printf 'GET /metrics HTTP/1.0\r\nHost: %s\r\n\r\n' "$host" >&3
status=""
IFS= read -r -t 5 status <&3
exec 3<&-
case $status in
    "HTTP/1."?" 200"*) exit 0 ;;
esac
echo "wren-healthcheck: GET http://$host:$port/metrics: '${status%$'\r'}' (want 200)" >&2
exit 1
