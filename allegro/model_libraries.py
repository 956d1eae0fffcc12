"""diffusers' and transformers' model code, imported without torchao.

Both libraries import torchao as soon as their model classes load, whenever it is installed:
transformers 5.25 through modeling_utils.py:95 -> quantizers/auto.py:73 ->
quantizer_torchao.py:37-40, diffusers 0.42.1 through quantizers/torchao/torchao_quantizer.py:55-
63 and :100-106. Importing torchao 0.18 costs seconds and prints warnings that only matter to
its own kernels ("Failed to load ... _C_mxfp8", "Unable to import torchao Tensor objects",
two torch pytree deprecations). Only the fp8 and int8 memory profiles use it
(allegro.loading), and they import it themselves. So the libraries are imported once with
torchao hidden, then their availability checks are reset, so that a profile loaded later in
the same process finds torchao as usual.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
from collections.abc import Iterator

_LIBRARY_MODULES = (
    "diffusers.models.modeling_utils",
    "diffusers.pipelines.pipeline_utils",
    "transformers.modeling_utils",
)


def import_model_libraries() -> None:
    """Import the libraries' model code (diffusers, transformers) without importing torchao.
    Once per process; nothing to do where they or torchao are already imported."""
    if all(name in sys.modules for name in _LIBRARY_MODULES) or "torchao" in sys.modules:
        return
    if importlib.util.find_spec("torchao") is None:  # not installed: nothing to hide
        for name in _LIBRARY_MODULES:
            importlib.import_module(name)
        return
    with _torchao_hidden():
        for name in _LIBRARY_MODULES:
            importlib.import_module(name)
    _reset_availability()


@contextlib.contextmanager
def _torchao_hidden() -> Iterator[None]:
    """None in sys.modules: ``import torchao`` raises ImportError and
    ``importlib.util.find_spec`` answers None (CPython 3.11 Lib/importlib/util.py:104-107),
    which is how both libraries ask."""
    sys.modules["torchao"] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        if sys.modules.get("torchao", 0) is None:
            del sys.modules["torchao"]


def _reset_availability() -> None:
    """Let the libraries see torchao again. What they skipped meanwhile is only used with
    checkpoints saved by torchao or by their own torchao quantizers, neither of which this
    project loads: the memory profiles quantize with torchao directly and through
    transformers' TorchAoConfig, which asks ``is_torchao_available`` when it is made
    (utils/quantization_config.py:1513) and when it quantizes (quantizer_torchao.py:68)."""
    transformers_utils = sys.modules.get("transformers.utils.import_utils")
    if transformers_utils is not None:  # an lru_cache (import_utils.py:1675-1681)
        transformers_utils.is_torchao_available.cache_clear()
    diffusers_utils = sys.modules.get("diffusers.utils.import_utils")
    if diffusers_utils is not None:  # module constants read by is_torchao_available and
        # is_torchao_version (import_utils.py:227, 390-391, 873-885), which group
        # offloading asks about each tensor (hooks/group_offloading.py:39-41)
        available, version = diffusers_utils._is_package_available("torchao")
        diffusers_utils._torchao_available = available
        diffusers_utils._torchao_version = version
