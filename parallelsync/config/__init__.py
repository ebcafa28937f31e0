"""The configuration layer: the option table and the frozen config built from it."""

from parallelsync.config.build import CopyConfig, build_config, build_copy_config, load_file, merge
from parallelsync.config.options import OPTIONS, Option, options_for

__all__ = [
    "OPTIONS",
    "CopyConfig",
    "Option",
    "build_config",
    "build_copy_config",
    "load_file",
    "merge",
    "options_for",
]
