"""Import PyTorch models into Relax with the shift family as ``R.ecnn.*`` ops (``from_torch``)."""
from .report import RewriteReport, RewriteRow
from .torch_import import ExportError, UnsupportedOperatorError, from_torch, import_pipeline

__all__ = ["from_torch", "import_pipeline", "RewriteReport", "RewriteRow", "ExportError", "UnsupportedOperatorError"]
