"""rtdgan training: data sets, the synthetic set, pyramid, losses, the rough-to-detail loop, evaluation, export."""
