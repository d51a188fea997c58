"""How each Mixpanel API family authenticates, as the real service checks it."""

from __future__ import annotations

from starlette.responses import Response

from mixpanel_mcp.double.responses import JSONResponse
from mixpanel_mcp.double.state import DoubleState, RecordedRequest


def query_auth(state: DoubleState, request: RecordedRequest) -> Response | None:
    """Query and Export: service account Basic + project_id, or the legacy secret as Basic user."""
    project = state.project
    auth = request.basic_auth
    if auth == (project.sa_username, project.sa_secret):
        project_id = request.query.get("project_id")
        if project_id is None:
            return query_error(request, 400, "project_id is required when authenticating with a service account")
        if project_id != str(project.project_id):
            return query_error(request, 403, f"service account does not have access to project {project_id}")
        return _cluster(state, request)
    if auth is not None and auth[0] == project.api_secret:
        return _cluster(state, request)
    return query_error(request, 401, "Invalid username or password")


def _cluster(state: DoubleState, request: RecordedRequest) -> Response | None:
    """A project of another data residency, as the live Query/Export hosts answer it (a 400, not a 401)."""
    return query_error(request, 400, "Invalid project id for cluster") if state.foreign else None


def import_auth(state: DoubleState, request: RecordedRequest) -> Response | None:
    """/import: service account + project_id, the legacy secret, or the project token as Basic user."""
    project = state.project
    auth = request.basic_auth
    if auth == (project.sa_username, project.sa_secret):
        if request.query.get("project_id") != str(project.project_id):
            return JSONResponse({"code": 401, "error": "Invalid project id for service account", "status": "Unauthorized"}, 401)
        return None
    if auth is not None and auth[0] in (project.api_secret, project.token):
        return None
    return JSONResponse({"code": 401, "error": "Invalid credentials", "status": "Unauthorized"}, 401)


def lexicon_auth(state: DoubleState, request: RecordedRequest, project_id: str) -> Response | None:
    """Lexicon Schemas: service account only, project id in the path."""
    project = state.project
    if request.basic_auth != (project.sa_username, project.sa_secret):
        return JSONResponse({"error": "Authentication required", "status": "error"}, 401)
    if project_id != str(project.project_id):
        return JSONResponse({"error": f"You do not have access to project {project_id}", "status": "error"}, 403)
    return None


def query_error(request: RecordedRequest, status: int, message: str) -> JSONResponse:
    """The shape observed from the Query API: the request echoed, and the error."""
    query = "&".join(f"{k}={v}" for k, v in request.query.items())
    return JSONResponse({"request": f"{request.path}?{query}", "error": message}, status)


def app_auth(state: DoubleState, request: RecordedRequest, project_id: str | None = None) -> Response | None:
    """The app API (annotations, feature flag management, experiments): service account only; the project (or the
    workspace, which belongs to one) is in the path."""
    project = state.project
    if request.basic_auth != (project.sa_username, project.sa_secret):
        return JSONResponse({"error": "Authentication required", "status": "error"}, 401)
    if project_id is not None and project_id != str(project.project_id):
        return JSONResponse({"error": f"You do not have access to project {project_id}", "status": "error"}, 403)
    return None


def workspace_auth(state: DoubleState, request: RecordedRequest, workspace_id: str, project_id: str | None = None) -> Response | None:
    """The app API at a workspace: as `app_auth`, and the workspace must be the project's."""
    if (denied := app_auth(state, request, project_id)) is not None:
        return denied
    if workspace_id != str(state.project.workspace_id):
        return JSONResponse({"error": f"You do not have access to workspace {workspace_id}", "status": "error"}, 403)
    return None
