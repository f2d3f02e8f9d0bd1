"""Stage 3 of the data path: the one scoring implementation and the statistics over its rows.

``metrics`` (the registry of every metric: name, unit, direction, aggregation, where shown),
``scoring`` (per-case scores of a label map), ``surface`` (Dice and the surface distances),
``grading`` (Steinberg, JIC, ARCO from label maps), ``slices`` and ``localization`` (the
mid-coronal slice and heat maps), ``summaries`` (run summaries), ``rows`` (per-case rows and
their patients), ``volumes`` (manual vs automatic volumes), ``bootstrap`` (the vectorised
patient-bootstrap kernels of their intervals) and ``comparison`` (paired tests between two runs).
"""
