"""Stage 3 of the data path: the one scoring implementation and the statistics over its rows.

``scoring`` (per-case scores of a label map), ``surface`` (Dice and the surface distances),
``grading`` (Steinberg, JIC, ARCO from label maps), ``slices`` and ``localization`` (the
mid-coronal slice and heat maps), ``summaries`` (run summaries), ``bootstrap`` (the vectorised
bootstrap kernels of their intervals) and ``comparison`` (paired tests between two runs).
"""
