"""The science: plain functions over batches (numpy/pandas/scikit-learn); no Django, no Celery."""
