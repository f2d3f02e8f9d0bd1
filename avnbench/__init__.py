"""avnbench: one benchmark for deep-learning methods on avascular necrosis of the femoral head."""

from importlib.metadata import PackageNotFoundError, version

from avnbench.hookspecs import hookimpl

try:
    __version__ = version("avnbench")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["__version__", "hookimpl"]
