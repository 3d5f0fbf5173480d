"""clipreid_plugin: a person/vehicle re-identification toolkit with CLIP-ReID as a plugin.

Importing the package registers every built-in component (backbones, heads, losses,
meta-architectures, datasets, samplers, evaluators) in its registry.
"""

__version__ = "0.1.0"

from . import data, evaluation, modeling, engine  # noqa: E402,F401  (import = register)
