"""avnbench plugin: the ``jic-classifier`` method (seed study 004, Shen et al. 2024)."""

from avnbench import hookimpl


@hookimpl
def avnbench_register_methods(register):
    from avnbench_jic_classifier.method import JicClassifier

    register(JicClassifier)
