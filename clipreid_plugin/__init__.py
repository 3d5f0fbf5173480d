"""clipreid_plugin: a person/vehicle re-identification toolkit with CLIP-ReID as a plugin.

Importing the package registers the host's components (backbones, heads, losses,
meta-architectures, datasets, samplers, evaluators, hooks) in their registries. Plugins (the
built-in CLIP-ReID one among them) are imported on demand: by ``get_cfg``/``load_cfg`` and
registry look-ups (installed entry points), or by a config's ``PLUGINS``.
"""

__version__ = "0.1.0"

from . import data, evaluation, modeling, engine  # noqa: E402,F401  (import = register)
