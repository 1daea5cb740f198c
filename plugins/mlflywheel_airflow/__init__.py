"""mlflywheel's Airflow layer: hooks for connections, thin operators over the core, links."""
