"""rtdgan models: nn.Modules and their config dataclasses only (no losses, no data)."""
