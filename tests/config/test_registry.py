"""Registries list what is registered when a name is unknown."""

import pytest

from clipreid_plugin.utils.registry import Registry


def test_unknown_name_lists_registered_and_close_names():
    reg = Registry("THING")

    @reg.register()
    class ResNetBackbone:  # noqa: D401 - test fixture
        pass

    @reg.register()
    class ViTBackbone:
        pass

    assert reg.get("ResNetBackbone") is ResNetBackbone
    with pytest.raises(KeyError) as e:
        reg.get("ResnetBackbone")
    msg = str(e.value)
    assert "ResNetBackbone" in msg and "ViTBackbone" in msg and "Did you mean" in msg
    assert reg.names() == ["ResNetBackbone", "ViTBackbone"]
