"""The admin listener: health, readiness, Prometheus metrics, recent audit events and the dashboard.

It is read-only, loopback by default, and never one of the public sockets
(the config loader refuses both mistakes).
"""
