"""Configuration: :func:`get_cfg` returns the defaults; YAML files may chain ``_BASE_`` files."""

from .config import CfgNode, ConfigError, get_cfg, flatten_keys
from .clipreid_config import add_clipreid_config

__all__ = ["CfgNode", "ConfigError", "get_cfg", "flatten_keys", "add_clipreid_config"]
