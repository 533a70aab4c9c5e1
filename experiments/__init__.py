"""One experiment file per paper."""
