"""The config and loading seams: PLUGINS in YAML (with _BASE_ chains), a PLUGINS override,
installed entry points, config extensions, data-dependent keys, and the messages when a plugin
cannot be loaded."""

import os
import re
import subprocess
import sys
import textwrap

import pytest

from clipreid_plugin.config import (CfgNode, ConfigError, DataInfo, declare_data_dependent_key, fill_data_dependent_keys,
                                    get_cfg, load_cfg)
from clipreid_plugin.utils.errors import PluginError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _plugin(folder, name, key, default):
    """A plugin file that adds ``PLUGIN_TEST.<key>`` with ``default`` (a fresh module name per test)."""
    (folder / f"{name}.py").write_text(textwrap.dedent(f"""\
        from clipreid_plugin.config import CfgNode as CN, register_config_extension

        @register_config_extension
        def add_keys(cfg):
            if "PLUGIN_TEST" not in cfg:
                cfg.PLUGIN_TEST = CN()
            cfg.PLUGIN_TEST.{key} = {default!r}
        """))


def test_plugins_of_the_whole_base_chain_load_before_the_file_is_merged(tmp_path):
    (tmp_path / "plugins").mkdir()
    _plugin(tmp_path / "plugins", "chain_base_plugin", "FROM_BASE", 1)
    _plugin(tmp_path, "chain_leaf_plugin", "FROM_LEAF", "a")
    (tmp_path / "base.yml").write_text("PLUGINS: [plugins/chain_base_plugin.py]\nPLUGIN_TEST:\n  FROM_BASE: 5\n")
    (tmp_path / "leaf.yml").write_text("_BASE_: base.yml\nPLUGINS: [chain_leaf_plugin.py]\n"
                                       "PLUGIN_TEST:\n  FROM_LEAF: b\n")
    cfg = load_cfg(str(tmp_path / "leaf.yml"))
    assert (cfg.PLUGIN_TEST.FROM_BASE, cfg.PLUGIN_TEST.FROM_LEAF) == (5, "b")
    # the run records every plugin of the chain, as absolute paths (config.yaml reloads anywhere)
    assert list(cfg.PLUGINS) == [str(tmp_path / "plugins" / "chain_base_plugin.py"),
                                 str(tmp_path / "chain_leaf_plugin.py")]
    dumped = tmp_path / "dumped.yml"
    cfg.dump_to(str(dumped))
    assert load_cfg(str(dumped)).PLUGIN_TEST.FROM_LEAF == "b"
    # a config built afterwards has the keys with their defaults
    assert get_cfg().PLUGIN_TEST.FROM_BASE == 1


def test_plugins_override_on_the_command_line(tmp_path, monkeypatch):
    _plugin(tmp_path, "override_plugin", "VALUE", 3)
    monkeypatch.chdir(tmp_path)
    cfg = load_cfg("", ["PLUGINS", "['override_plugin.py']", "PLUGIN_TEST.VALUE", "7"])
    assert cfg.PLUGIN_TEST.VALUE == 7 and list(cfg.PLUGINS) == [str(tmp_path / "override_plugin.py")]


def test_a_dotted_module_name_is_imported(tmp_path, monkeypatch):
    pkg = tmp_path / "dotted_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    _plugin(pkg, "keys", "DOTTED", 1.5)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "c.yml").write_text("PLUGINS: [dotted_pkg.keys]\nPLUGIN_TEST: {DOTTED: 2.5}\n")
    assert load_cfg(str(tmp_path / "c.yml")).PLUGIN_TEST.DOTTED == 2.5


def test_plugin_errors_name_what_to_fix(tmp_path):
    (tmp_path / "missing.yml").write_text("PLUGINS: [no_such_plugin_module]\n")
    with pytest.raises(PluginError, match=r"'no_such_plugin_module' \(listed in .*missing.yml\) is not importable"):
        load_cfg(str(tmp_path / "missing.yml"))
    (tmp_path / "nofile.yml").write_text("PLUGINS: [../nowhere/plug.py]\n")
    with pytest.raises(PluginError, match=r"nowhere/plug.py does not exist .*relative to the YAML file"):
        load_cfg(str(tmp_path / "nofile.yml"))
    (tmp_path / "broken_plugin.py").write_text("raise RuntimeError('boom')\n")
    (tmp_path / "broken.yml").write_text("PLUGINS: [broken_plugin.py]\n")
    with pytest.raises(PluginError, match=r"broken_plugin.py.*failed to import: RuntimeError: boom"):
        load_cfg(str(tmp_path / "broken.yml"))
    (tmp_path / "notalist.yml").write_text("PLUGINS: {a: 1}\n")
    with pytest.raises(ConfigError, match="PLUGINS in .*notalist.yml must be a list"):
        load_cfg(str(tmp_path / "notalist.yml"))


def test_missing_base_names_the_file_that_refers_to_it(tmp_path):
    (tmp_path / "child.yml").write_text("_BASE_: nothere/base.yml\n")
    with pytest.raises(ConfigError, match=r"nothere/base.yml \(the _BASE_ of .*child.yml\)"):
        load_cfg(str(tmp_path / "child.yml"))


def test_a_base_loop_is_one_line_naming_the_files(tmp_path):
    (tmp_path / "a.yml").write_text("_BASE_: b.yml\n")
    (tmp_path / "b.yml").write_text("_BASE_: a.yml\n")
    a, b = str(tmp_path / "a.yml"), str(tmp_path / "b.yml")
    with pytest.raises(ConfigError, match=re.escape(f"_BASE_ loop: {a} -> {b} -> {a}.")):
        load_cfg(a)


def _site_with_entry_point(tmp_path, module_source):
    """A folder that looks like site-packages with one installed distribution declaring a plugin."""
    site = tmp_path / "site"
    (site / "acme_reid-1.0.dist-info").mkdir(parents=True)
    (site / "acme_reid-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-reid\nVersion: 1.0\n")
    (site / "acme_reid-1.0.dist-info" / "entry_points.txt").write_text(
        "[clipreid_plugin.plugins]\nacme = acme_reid_plugin\n")
    (site / "acme_reid_plugin.py").write_text(module_source)
    return site


def _python(code, site, **env):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), REPO]), PYTHONWARNINGS="ignore", **env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_installed_packages_register_through_the_entry_point_group(tmp_path):
    """In a fresh process: a registry miss imports the installed plugins (the built-in CLIP-ReID one
    comes through the same group), and so does building a config; both are off with autoload
    disabled."""
    source = ("from clipreid_plugin.config import CfgNode as CN, register_config_extension\n"
              "@register_config_extension\n"
              "def add(cfg):\n    cfg.ACME = CN({'LEVEL': 3})\n")
    site = _site_with_entry_point(tmp_path, source)
    code = ("from clipreid_plugin.modeling import META_ARCH_REGISTRY\n"
            "try:\n    found = META_ARCH_REGISTRY.get('CLIPReID').__module__\n"
            "except KeyError:\n    found = 'missing'\n"
            "from clipreid_plugin.config import get_cfg\n"
            "print(found, get_cfg().get('ACME', {}).get('LEVEL'))\n")
    p = _python(code, site)
    assert p.returncode == 0 and p.stdout.split() == ["clipreid_plugin.plugins.clipreid.clipreid", "3"], p.stderr
    p = _python(code, site, CLIPREID_DISABLE_PLUGIN_AUTOLOAD="1")
    assert p.returncode == 0 and p.stdout.split() == ["missing", "None"], p.stderr[-2000:]


def test_a_broken_installed_plugin_is_named_with_its_package(monkeypatch):
    from importlib import metadata

    from clipreid_plugin.utils import plugins

    class Dist:
        name = "acme-reid"

    class BrokenEntryPoint:
        name, value, dist = "acme", "acme_reid_plugin", Dist()

        def load(self):
            raise ModuleNotFoundError("No module named 'not_a_real_dependency_xyz'")

    monkeypatch.setattr(metadata, "entry_points", lambda group: [BrokenEntryPoint()])
    monkeypatch.setattr(plugins, "_entry_points_loaded", False)
    with pytest.raises(PluginError, match=r"entry point 'acme' \(acme_reid_plugin\) of the installed package "
                                          r"'acme-reid': ModuleNotFoundError: .*CLIPREID_DISABLE_PLUGIN_AUTOLOAD=1"):
        plugins.load_entry_point_plugins()


def test_data_dependent_keys_are_filled_only_when_empty():
    declare_data_dependent_key("MODEL.HEADS.NUM_CLASSES", "num_classes")
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.VIT.NUM_CAMERAS = 4  # set by the user: kept
    filled = fill_data_dependent_keys(cfg, DataInfo(num_classes=751, num_cameras=6, num_views=1, kind="person"))
    assert filled.MODEL.HEADS.NUM_CLASSES == 751 and filled.MODEL.BACKBONE.VIT.NUM_CAMERAS == 4
    assert filled.CLIPREID.PROMPT.CLASS_WORD == "person"  # declared by the CLIP-ReID plugin
    assert filled.CLIPREID.BACKBONE.NUM_CAMERAS == 6 and filled.is_frozen()
    unknown_kind = fill_data_dependent_keys(get_cfg(), DataInfo(3, 2, 1, None))
    assert unknown_kind.CLIPREID.PROMPT.CLASS_WORD == ""  # nothing known: left for the component to decide
    with pytest.raises(ValueError, match="source must be one of num_classes, num_cameras, num_views, kind"):
        declare_data_dependent_key("X.Y", "num_people")


def test_config_messages():
    cfg = get_cfg()
    with pytest.raises(ConfigError, match=r"Closest valid keys: SOLVER.MAX_EPOCHS, SOLVER.DELAY_EPOCHS, "
                                          r"SOLVER.WARMUP_EPOCHS\.$"):  # each key once
        cfg.merge_from_list(["SOLVER.MAX_EPOCH", "3"])
    with pytest.raises(ConfigError, match=r"'SOLVER.MAX_EPOCHS' expects a int \(default 120\), got str 'ten'"):
        cfg.merge_from_list(["SOLVER.MAX_EPOCHS", "ten"])
    with pytest.raises(ConfigError, match="not a config key; command-line flags go before or after"):
        cfg.merge_from_list(["--resume", "SOLVER.MAX_EPOCHS"])
    cfg.merge_from_list(["DATASETS.NAMES", "VeRi"])  # a bare name for a list of names
    assert tuple(cfg.DATASETS.NAMES) == ("VeRi",)
    with pytest.raises(ConfigError, match=r"INPUT.SIZE_TRAIN.*expects a list.*Give a list"):
        cfg.merge_from_list(["INPUT.SIZE_TRAIN", "256"])
    assert isinstance(cfg, CfgNode)
