"""rtdgan service: the FastAPI app, its settings and the `rtd` command line. Never imports torch."""
