import pytest

from simclr_distill.registry import Registry


def test_register_get_and_errors():
  reg = Registry("widget")

  @reg.register("a")
  def a():
    return 1

  assert reg.get("a") is a and "a" in reg and reg.names() == ["a"]
  with pytest.raises(KeyError, match="widget 'a' is already registered"):
    reg.register("a")(lambda: 2)
  with pytest.raises(KeyError, match="unknown widget 'b'; known: a"):
    reg.get("b")
