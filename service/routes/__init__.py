"""One router per resource: search (generate + search), products, admin, health, metrics, demo."""
