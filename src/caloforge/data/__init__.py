"""Reading and writing shower sets: the canonical file, the formats users bring, datasets."""
