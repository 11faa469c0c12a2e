"""Generation: a checkpoint turned into showers."""
