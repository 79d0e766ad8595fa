"""Data: built-in phantoms, the prepared on-disk format, datasets and augmentation."""
