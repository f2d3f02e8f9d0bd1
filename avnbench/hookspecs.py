"""The plugin contract: every hook avnbench calls, ``avnbench_``-prefixed, typed and documented.

A plugin is a module (registered through the ``avnbench`` entry-point group, or built in) that
implements some of these hooks with :data:`hookimpl`::

    from avnbench import hookimpl

    @hookimpl
    def avnbench_register_methods(register):
        register(MyMethod)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from avnbench.methods import Method

PROJECT = "avnbench"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def avnbench_register_methods(register: Callable[[type["Method"]], None]) -> None:
    """Register the plugin's methods: call ``register(MethodClass)`` once per method.

    ``MethodClass`` subclasses :class:`avnbench.methods.Method` and has a unique ``card.name``.
    Registering the same name twice is an error that names both plugins.
    """
