"""Stage 1 of the data path: the dataset on disk and everything that reads, writes or makes it.

``dataset`` (the on-disk contract), ``importing``/``validation``/``landmarks`` (real data in),
``phantom/`` (the synthetic dataset), ``splits`` (patient-grouped folds), ``predictions``
(label maps out) and ``preview`` (PNG views).
"""
