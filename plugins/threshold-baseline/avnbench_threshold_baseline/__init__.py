"""avnbench plugin: the classical threshold baseline, the floor of every leaderboard."""

from avnbench import hookimpl


@hookimpl
def avnbench_register_methods(register):
    from avnbench_threshold_baseline.method import ThresholdBaseline

    register(ThresholdBaseline)
