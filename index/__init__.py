"""rtdgan index: the shared preprocessing and the FAISS + SQLite catalog. Never imports torch."""
