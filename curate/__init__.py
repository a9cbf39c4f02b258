"""Curate: training-data curation and audit. Signals first, decisions later."""

from .workspace import Workspace, WorkspaceBusy, WorkspaceError

__version__ = "0.1.0"
__all__ = ["Workspace", "WorkspaceBusy", "WorkspaceError", "__version__"]
