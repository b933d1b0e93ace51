"""What operators see and what keeps a cluster honest: Prometheus metrics, structured logs
without tokens, the server registry (heartbeats, dead servers' sessions) and the account watch."""
