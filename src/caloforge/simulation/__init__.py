"""The embedded parametrized (GFlash-style) electromagnetic shower simulator."""
