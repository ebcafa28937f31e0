"""Everything about the slot after the snapshot: publication, peeks, pgoutput, changed rows."""
