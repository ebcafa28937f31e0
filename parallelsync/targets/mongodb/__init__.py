"""MongoDB as a target: client, worker sink, raw runs, lease, job documents, digests, swap."""
