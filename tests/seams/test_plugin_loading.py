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
    """A plugin file that adds ``<NAME>.<key>`` with ``default``, in a group of its own named after
    the plugin (a fresh module name per test)."""
    (folder / f"{name}.py").write_text(textwrap.dedent(f"""\
        from clipreid_plugin.config import CfgNode as CN, register_config_extension

        @register_config_extension
        def add_keys(cfg):
            cfg.{name.upper()} = CN()
            cfg.{name.upper()}.{key} = {default!r}
        """))


def test_plugins_of_the_whole_base_chain_load_before_the_file_is_merged(tmp_path):
    (tmp_path / "plugins").mkdir()
    _plugin(tmp_path / "plugins", "chain_base_plugin", "FROM_BASE", 1)
    _plugin(tmp_path, "chain_leaf_plugin", "FROM_LEAF", "a")
    (tmp_path / "base.yml").write_text("PLUGINS: [plugins/chain_base_plugin.py]\nCHAIN_BASE_PLUGIN:\n  FROM_BASE: 5\n")
    (tmp_path / "leaf.yml").write_text("_BASE_: base.yml\nPLUGINS: [chain_leaf_plugin.py]\n"
                                       "CHAIN_LEAF_PLUGIN:\n  FROM_LEAF: b\n")
    cfg = load_cfg(str(tmp_path / "leaf.yml"))
    assert (cfg.CHAIN_BASE_PLUGIN.FROM_BASE, cfg.CHAIN_LEAF_PLUGIN.FROM_LEAF) == (5, "b")
    # the run records every plugin of the chain, as absolute paths (config.yaml reloads anywhere)
    assert list(cfg.PLUGINS) == [str(tmp_path / "plugins" / "chain_base_plugin.py"),
                                 str(tmp_path / "chain_leaf_plugin.py")]
    dumped = tmp_path / "dumped.yml"
    cfg.dump_to(str(dumped))
    assert load_cfg(str(dumped)).CHAIN_LEAF_PLUGIN.FROM_LEAF == "b"
    # a config that does not name the plugins has none of their keys, although they were imported
    assert "CHAIN_BASE_PLUGIN" not in get_cfg() and "CHAIN_LEAF_PLUGIN" not in load_cfg("")
    # naming one activates that one only
    only_base = get_cfg([str(tmp_path / "plugins" / "chain_base_plugin.py")])
    assert only_base.CHAIN_BASE_PLUGIN.FROM_BASE == 1 and "CHAIN_LEAF_PLUGIN" not in only_base


def test_plugins_override_on_the_command_line(tmp_path, monkeypatch):
    _plugin(tmp_path, "override_plugin", "VALUE", 3)
    monkeypatch.chdir(tmp_path)
    cfg = load_cfg("", ["PLUGINS", "['override_plugin.py']", "OVERRIDE_PLUGIN.VALUE", "7"])
    assert cfg.OVERRIDE_PLUGIN.VALUE == 7 and list(cfg.PLUGINS) == [str(tmp_path / "override_plugin.py")]


def test_a_dotted_module_name_is_imported(tmp_path, monkeypatch):
    pkg = tmp_path / "dotted_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    _plugin(pkg, "keys", "DOTTED", 1.5)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "c.yml").write_text("PLUGINS: [dotted_pkg.keys]\nKEYS: {DOTTED: 2.5}\n")
    assert load_cfg(str(tmp_path / "c.yml")).KEYS.DOTTED == 2.5


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


def test_installed_plugins_are_available_and_active_only_where_named(tmp_path):
    """In a fresh process: building a config imports no installed plugin; a registry miss names the
    plugin that provides the name instead of using it; ``PLUGINS: [acme]`` (the entry point's name)
    activates it; with autoload disabled even the miss does not look."""
    source = ("from clipreid_plugin.config import CfgNode as CN, register_config_extension\n"
              "from clipreid_plugin.modeling import LOSS_REGISTRY\n"
              "import torch\n"
              "@register_config_extension\n"
              "def add(cfg):\n    cfg.ACME = CN({'LEVEL': 3})\n"
              "@LOSS_REGISTRY.register()\n"
              "class AcmeLoss(torch.nn.Module):\n"
              "    def __init__(self, cfg):\n        super().__init__()\n")
    site = _site_with_entry_point(tmp_path, source)
    code = ("import sys\n"
            "from clipreid_plugin.config import get_cfg, load_cfg\n"
            "cfg = get_cfg()\n"
            "print('ACME' in cfg, 'acme_reid_plugin' in sys.modules)\n"
            "from clipreid_plugin.modeling import LOSS_REGISTRY\n"
            "try:\n    LOSS_REGISTRY.build('AcmeLoss', cfg)\nexcept KeyError as e:\n    print('MISS', e)\n"
            "active = load_cfg('', ['PLUGINS', \"['acme']\"])\n"
            "print(active.ACME.LEVEL, type(LOSS_REGISTRY.build('AcmeLoss', active)).__name__, 'ACME' in get_cfg())\n")
    p = _python(code, site)
    assert p.returncode == 0, p.stderr[-2000:]
    lines = p.stdout.splitlines()
    assert lines[0] == "False False"  # building a config imported nothing
    assert lines[1].startswith("MISS") and "provided by the plugin 'acme': add it to PLUGINS" in lines[1]
    assert lines[2] == "3 AcmeLoss False"
    p = _python("from clipreid_plugin.modeling import LOSS_REGISTRY\n"
                "try:\n    LOSS_REGISTRY.get('AcmeLoss')\nexcept KeyError as e:\n    print('MISS', e)\n", site,
                CLIPREID_DISABLE_PLUGIN_AUTOLOAD="1")
    assert p.returncode == 0 and "No object named 'AcmeLoss'" in p.stdout, p.stderr[-2000:]


def test_a_plugin_adds_keys_only_in_groups_of_its_own(tmp_path):
    (tmp_path / "intruder.py").write_text(textwrap.dedent("""\
        from clipreid_plugin.config import register_config_extension

        @register_config_extension
        def add_keys(cfg):
            cfg.MODEL.HEADS.INTRUDER_DIM = 3
        """))
    with pytest.raises(PluginError, match=r"adds MODEL.HEADS.INTRUDER_DIM inside a group it does not own"):
        load_cfg("", ["PLUGINS", f"['{tmp_path / 'intruder.py'}']"])


def test_a_key_of_an_inactive_plugin_names_the_plugin():
    with pytest.raises(ConfigError, match=r"'CLIPREID' belongs to the plugin .*add it to PLUGINS"):
        load_cfg("", ["CLIPREID.PHASES", "both"])


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
    cfg = get_cfg(["clipreid_plugin.plugins.clipreid"])
    cfg.MODEL.BACKBONE.VIT.NUM_CAMERAS = 4  # set by the user: kept
    filled = fill_data_dependent_keys(cfg, DataInfo(num_classes=751, num_cameras=6, num_views=1, kind="person"))
    assert filled.MODEL.HEADS.NUM_CLASSES == 751 and filled.MODEL.BACKBONE.VIT.NUM_CAMERAS == 4
    assert filled.CLIPREID.PROMPT.CLASS_WORD == "person"  # declared by the CLIP-ReID plugin
    assert filled.CLIPREID.BACKBONE.NUM_CAMERAS == 6 and filled.is_frozen()
    unknown_kind = fill_data_dependent_keys(get_cfg(["clipreid_plugin.plugins.clipreid"]), DataInfo(3, 2, 1, None))
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


def test_a_resnet_run_imports_no_plugin_and_no_open_clip(tmp_path):
    """A bag-of-tricks run, start to finish in a fresh process: no module of any plugin and no
    open_clip is imported, and its config.yaml holds only host keys."""
    code = textwrap.dedent(f"""\
        import sys
        sys.path.insert(0, {os.path.join(REPO, "tools")!r})
        import train_net
        code = train_net.cli(["--config-file", {os.path.join(REPO, "configs", "SyntheticReID", "bagtricks_R18.yml")!r},
            "DATASETS.ROOT_DIR", {str(tmp_path / "data")!r}, "OUTPUT_DIR", {str(tmp_path / "run")!r},
            "MODEL.DEVICE", "cpu", "DATASETS.SYNTHETIC.NUM_TRAIN_IDS", "4", "DATASETS.SYNTHETIC.NUM_TEST_IDS", "3",
            "DATASETS.SYNTHETIC.IMAGES_PER_ID", "4", "DATASETS.SYNTHETIC.SIZE", "[32, 16]",
            "INPUT.SIZE_TRAIN", "[32, 16]", "INPUT.SIZE_TEST", "[32, 16]", "SOLVER.IMS_PER_BATCH", "8",
            "DATALOADER.NUM_INSTANCE", "2", "DATALOADER.NUM_WORKERS", "0", "SOLVER.MAX_EPOCHS", "1",
            "TEST.IMS_PER_BATCH", "16"])
        loaded = sorted(m for m in sys.modules if m.startswith(("clipreid_plugin.plugins", "open_clip")))
        print(code, loaded)
        """)
    p = _python(code, tmp_path)
    assert p.returncode == 0 and p.stdout.strip().splitlines()[-1] == "0 []", p.stdout[-2000:] + p.stderr[-2000:]
    assert "CLIPREID" not in (tmp_path / "run" / "config.yaml").read_text()


def test_a_checkpoint_reactivates_its_plugins_and_a_moved_plugin_file_is_named(tmp_path):
    """A checkpoint stores its config, PLUGINS included: loading it activates them. When a plugin file
    is gone the error names that file and the override that gives its new place, which then works."""
    import torch

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _plugin(tmp_path / "a", "moving_plugin", "K", 1)
    cfg = load_cfg("", ["PLUGINS", f"['{tmp_path / 'a' / 'moving_plugin.py'}']", "MOVING_PLUGIN.K", "2"])
    ckpt = tmp_path / "model_final.pth"
    torch.save({"model": {}, "metadata": {"config": cfg.dump()}}, ckpt)  # what the Checkpointer stores
    assert load_cfg(str(ckpt)).MOVING_PLUGIN.K == 2  # activated from the .pth alone

    (tmp_path / "a" / "moving_plugin.py").rename(tmp_path / "b" / "moving_plugin.py")
    with pytest.raises(PluginError, match=r"model_final.pth was trained with the plugin file .*a/moving_plugin.py, "
                                          r"which no longer exists: restore it, or give its new place with the "
                                          r"override PLUGINS"):
        load_cfg(str(ckpt))
    moved = load_cfg(str(ckpt), ["PLUGINS", f"['{tmp_path / 'b' / 'moving_plugin.py'}']"])
    assert moved.MOVING_PLUGIN.K == 2 and list(moved.PLUGINS) == [str(tmp_path / "b" / "moving_plugin.py")]
