"""SLO spec and generators: slo.yaml -> validate (spec) -> rules, promtool tests, runbook,
Alertmanager config, Grafana dashboards and load-test gates; names come from conventions."""
