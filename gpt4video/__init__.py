"""Process-level glue shared by the API and the workers: settings, job store, CLI."""
