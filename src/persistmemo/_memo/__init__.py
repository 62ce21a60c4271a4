"""The memoized function: the decorator, its call paths, one computation per key, f.map."""
