"""Benchmarks run by `manage.py bench`: ingest, features, classifiers, stamps and the sustained-load pipeline."""
