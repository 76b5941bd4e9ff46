"""The API documentation pages, Swagger UI at /docs and ReDoc at /redoc, with their scripts served from
the installed fastapi-offline package: they work on an air-gapped board (no CDN)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_URL = "/docs/static"
ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")


def assets_folder() -> Path:
    """Where the installed fastapi-offline package keeps the Swagger UI and ReDoc files."""
    return Path(str(resources.files("fastapi_offline") / "static"))


def install_docs(app: FastAPI) -> None:
    """/docs, /docs/oauth2-redirect, /redoc and their assets under /docs/static (create the app
    with docs_url=None and redoc_url=None)."""
    app.mount(STATIC_URL, StaticFiles(directory=assets_folder()), name="docs-static")
    openapi_url = app.openapi_url or "/openapi.json"
    favicon = f"{STATIC_URL}/favicon.png"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url, title=f"{app.title} - Swagger UI",
            oauth2_redirect_url="/docs/oauth2-redirect", swagger_favicon_url=favicon,
            swagger_js_url=f"{STATIC_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{STATIC_URL}/swagger-ui.css")

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url=openapi_url, title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{STATIC_URL}/redoc.standalone.js", redoc_favicon_url=favicon,
                              with_google_fonts=False)
