"""Columns to documents: the `[mapping]` config and the projection (SELECT list + layout)."""
