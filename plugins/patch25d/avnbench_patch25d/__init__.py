"""avnbench plugin: ``patch25d-cnn``, seed 003's triplanar 2.5D patch CNN with dense inference."""

from avnbench import hookimpl


@hookimpl
def avnbench_register_methods(register):
    from avnbench_patch25d.method import Patch25dCNN

    register(Patch25dCNN)
