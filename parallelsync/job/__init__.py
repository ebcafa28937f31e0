"""The coordinator: one module per phase, composed by `copy.CopyJob` and `verify.run_verify`."""
