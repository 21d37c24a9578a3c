"""Model registry: versions in BentoML's model store, the champion, its history, rollback.

``store.ModelRegistry`` is the API; ``history`` defines the append-only event log and the
status transitions; ``changes`` wraps transitions as single calls for the CLI and flows.
"""
