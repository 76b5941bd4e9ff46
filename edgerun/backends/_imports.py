"""The backends' name for edgerun.optional (has_module, require), kept for plugins that import it."""

from ..optional import has_module, require

__all__ = ["has_module", "require"]
