"""Curate: training-data curation and audit. Signals first, decisions later."""

__version__ = "0.1.0"

from curate.core.workspace import Workspace, WorkspaceBusy, WorkspaceError  # noqa: E402

__all__ = ["Workspace", "WorkspaceBusy", "WorkspaceError", "__version__"]
