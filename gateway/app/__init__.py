"""The application shell: service assembly, configuration, admin CLI, status and
metrics."""
