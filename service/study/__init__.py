"""The human perception study of Sec. 5.3 as a tool: `rtd study create` draws photos and generates each method's
image once (study.py), `rtd study serve` runs the raters' page and stores their rankings in SQLite (app.py,
store.py), `rtd study simulate` fills a study with simulated raters for tests and examples (simulate.py). The
report (average human rank with 95 % intervals, Figure 5) is training/study_report.py: it needs matplotlib.
No torch here: generation goes through the ONNX pipeline (index/pipeline.py)."""
