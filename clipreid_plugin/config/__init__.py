"""Configuration: :func:`load_cfg` builds a run's config (defaults, plugin keys, a YAML file
with its ``_BASE_`` chain and ``PLUGINS``, overrides); :func:`get_cfg` returns the defaults.

Components extend the config through :func:`register_config_extension` (their own keys) and
:func:`declare_data_dependent_key` (keys filled from the training data).
"""

from .config import CfgNode, ConfigError, as_name_list, config_text_of_checkpoint, flatten_keys, get_cfg, load_cfg, read_config_chain
from .configurable import configurable, is_config, is_configurable
from .extensions import (DATA_SOURCES, DataInfo, apply_config_extensions, data_dependent_keys,
                         declare_data_dependent_key, fill_data_dependent_keys, lookup_key, register_config_check,
                         register_config_extension, registered_config_checks, registered_config_extensions)

__all__ = ["CfgNode", "ConfigError", "get_cfg", "load_cfg", "flatten_keys", "read_config_chain", "config_text_of_checkpoint",
           "register_config_extension", "apply_config_extensions", "registered_config_extensions",
           "DataInfo", "DATA_SOURCES", "declare_data_dependent_key", "data_dependent_keys",
           "fill_data_dependent_keys", "register_config_check", "registered_config_checks", "lookup_key",
           "as_name_list", "configurable", "is_config", "is_configurable"]
