"""avnbench plugin: nnU-Net v2 methods ``nnunet-2d``, ``nnunet-3d`` and ``nnunet-ensemble``."""

from avnbench import hookimpl


@hookimpl
def avnbench_register_methods(register):
    from avnbench_nnunet.method import NnunetEnsemble, NnunetThreeD, NnunetTwoD

    register(NnunetTwoD)
    register(NnunetThreeD)
    register(NnunetEnsemble)
