"""Stage 1 of the data path: the dataset on disk and everything that reads, writes or makes it.

``dataset`` (the on-disk contract), ``imageio`` (the one image reader and writer), ``files``
(atomic text writes, output checks, the import lock), ``image_checks`` (voxel and grid checks),
``sources``/``resampling``/``importing``/``landmarks`` (real data in), ``validation``
(``data check``), ``phantom/`` (the synthetic dataset), ``splits`` (patient-grouped folds),
``predictions`` (label maps out) and ``preview`` (PNG views).
"""
