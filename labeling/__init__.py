"""Label store and background retrain job for Language Ranker."""
