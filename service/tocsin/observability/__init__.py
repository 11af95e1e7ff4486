"""What tocsin says about itself: JSON log lines, metrics, traces, and the masking that
keeps secrets out of all three."""
