"""`weightgate`: download released weights (parallel, resumable, verified against the version's
signature), re-check a downloaded folder, and verify license grants offline.

Nothing here imports Django: the CLI shares only the pure signature and grant formats with the
service (`release.signature_format`, `licensing.grant_format`)."""
