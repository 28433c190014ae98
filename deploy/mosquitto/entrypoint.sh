#!/bin/sh
# Starts Mosquitto for the compose stack: the gateways' password file (`pusat gateway add`) plus
# Pusat's service accounts from the environment, in a private copy; the ACL as committed (and as
# `pusat gateway add` rewrites it). After adding a gateway: docker compose restart mosquitto.
set -eu

: "${MQTT_INGEST_PASSWORD:?set MQTT_INGEST_PASSWORD (see deploy/.env.example)}"
: "${MQTT_SIMULATOR_PASSWORD:?set MQTT_SIMULATOR_PASSWORD (see deploy/.env.example)}"
: "${MQTT_API_PASSWORD:?set MQTT_API_PASSWORD (see deploy/.env.example)}"

run=/mosquitto/run
mkdir -p "$run"
if [ -f /pusat/passwd ]; then cp /pusat/passwd "$run/passwd"; else : > "$run/passwd"; fi
cp /pusat/acl "$run/acl"
mosquitto_passwd -b "$run/passwd" pusat-ingest "$MQTT_INGEST_PASSWORD"
mosquitto_passwd -b "$run/passwd" pusat-simulator "$MQTT_SIMULATOR_PASSWORD"
mosquitto_passwd -b "$run/passwd" pusat-api "$MQTT_API_PASSWORD"
chown -R mosquitto:mosquitto "$run" /mosquitto/data
chmod 0700 "$run"
chmod 0600 "$run/passwd" "$run/acl"

exec mosquitto -c /pusat/mosquitto.conf
