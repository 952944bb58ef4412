"""Injury log intake: `strainwatch incidents import FILE.csv` (docs/incidents.md).

`csv_log` parses and validates an OSHA-300-like CSV, `store` writes `incident` points to InfluxDB
(the case id is the identity) and publishes `Incident` messages to incidents.v1, `cli` is the command.
"""
