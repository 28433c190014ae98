#!/bin/sh
# Debian packages the test suite needs: the servers it starts its own throwaway copies of.
# Installs only what is missing; needs root (or sudo) the first time on a fresh machine.
set -eu

missing=""
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing="$missing mosquitto"
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$missing postgresql"
# The wall's browser test drives Debian's Chromium with Playwright (no browser download here).
[ -x /usr/bin/chromium ] || missing="$missing chromium"
# The notification tests post alarms to a real Alertmanager.
[ -x /usr/bin/prometheus-alertmanager ] || missing="$missing prometheus-alertmanager"
# Ingest on a RabbitMQ cluster (throwaway nodes) and the hosts in network namespaces (ip netns).
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || missing="$missing rabbitmq-server"
# The public side's caching proxy (deploy/nginx/pusat.conf) and the burst benchmark's load
# generator (bench/public.py and its test).
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || missing="$missing nginx"
command -v wrk >/dev/null 2>&1 || missing="$missing wrk"
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || missing="$missing iproute2"

[ -z "$missing" ] && exit 0

echo "installing Debian packages:$missing"
if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
