"""Names in configs resolve to classes; plugin paths work; unknown names list the choices."""

from __future__ import annotations

import pytest

from hybrida import registry
from hybrida.assimilation.ensemble import ETKF


@pytest.mark.parametrize("table", [registry.MODELS, registry.METHODS, registry.OBSERVATIONS])
def test_every_registered_name_imports(table):
    for name in table:
        assert callable(registry.resolve(table, name, "thing"))


def test_plugin_path_and_errors():
    assert registry.resolve(registry.METHODS, "hybrida.assimilation.ensemble:ETKF", "method") is ETKF
    with pytest.raises(ValueError, match="choose one of: .*etkf"):
        registry.resolve(registry.METHODS, "etfk", "method")
    with pytest.raises(ImportError):
        registry.resolve(registry.METHODS, "hybrida.assimilation.ensemble:NoSuch", "method")
