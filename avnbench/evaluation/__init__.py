"""Stage 3 of the data path: the one scoring implementation and the statistics over its rows.

``scoring`` (per-case Dice and surface distances), ``grading`` (Steinberg, JIC, ARCO from label
maps), ``slices`` and ``localization`` (the mid-coronal slice and heat maps) and ``statistics``
(run summaries, bootstrap intervals, paired comparisons).
"""
