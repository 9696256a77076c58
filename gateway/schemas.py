"""Gateway I/O shapes."""

from pydantic import BaseModel


class WorkspaceCreated(BaseModel):
    """Credentials of a new workspace; the API key is shown only this once."""

    workspace_id: str
    name: str
    write_key: str
    api_key: str
