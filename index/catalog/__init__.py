"""The product catalog: engine-neutral types, the one dispatcher, the FAISS + SQLite engine and Milvus. No torch."""
