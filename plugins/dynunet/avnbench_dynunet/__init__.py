"""avnbench plugin: MONAI's Dynamic U-Net for femoral head and necrosis segmentation."""

from avnbench import hookimpl


@hookimpl
def avnbench_register_methods(register):
    """Register the ``dynunet`` method (imported lazily: torch and MONAI load only on use)."""
    from avnbench_dynunet.method import DynUNetMethod

    register(DynUNetMethod)
