"""`/docs` (Swagger UI) and `/redoc`, their scripts and styles served by the app itself.

FastAPI's own pages load them from a CDN, which the app's Content-Security-Policy forbids (and a
deployment may have no network): they were blank. `make vendor` copies the files into
frontend/vendor/api-docs/.
"""

from fastapi import APIRouter
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse

ASSETS = "/vendor/api-docs"
OPENAPI_URL = "/openapi.json"

router = APIRouter(include_in_schema=False)


@router.get("/docs")
async def swagger_ui() -> HTMLResponse:
    """The API, to read and try, in Swagger UI."""
    return get_swagger_ui_html(
        openapi_url=OPENAPI_URL,
        title="Taskwire API",
        swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS}/swagger-ui.css",
        swagger_favicon_url="data:,",
    )


@router.get("/redoc")
async def redoc() -> HTMLResponse:
    """The API's reference, in ReDoc."""
    return get_redoc_html(
        openapi_url=OPENAPI_URL,
        title="Taskwire API",
        redoc_js_url=f"{ASSETS}/redoc.standalone.js",
        redoc_favicon_url="data:,",
        with_google_fonts=False,
    )
