"""One module per use case; every front door (Prefect tasks, the CLI, the DVC stages,
the benchmarks) calls these functions and nothing below them assembles a use case.

==========  ==========================================================================
ingest      fetch a batch (file or synthetic), validate it, version it or quarantine it
prepare     events (file, synthetic or an accepted version) -> vocabulary, sequences, split
train       train the configured model on a prepared split; write the run record
evaluate    full-ranking metrics of any stored bundle on a split (one unknown-user policy)
challenge   challenger vs champion (or the baseline) on the same split -> gate decision
promote     gate-and-promote: deploy through the configured target, then move the champion
rollback    deploy an earlier version, then move the champion back to it
deploy      put a version (default: the champion) into service through its deploy target
==========  ==========================================================================

Each takes the typed config slice(s) it needs and the :class:`~components.workspace.Workspace`.
Like the rest of ``components/`` nothing here imports Prefect.
"""
