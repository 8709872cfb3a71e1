"""Dialog readers, the ranking-set creator and ranking-file readers."""
