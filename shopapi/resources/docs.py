"""/api/docs: the OpenAPI document and Swagger UI from locally installed assets (no CDN)."""

from __future__ import annotations

from pathlib import Path

import falcon
import msgspec

SWAGGER_STATIC = Path(str(__import__("swagger_ui").__file__)).parent / "static"

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="UTF-8">
  <title>shopapi — API docs</title>
  <link rel="stylesheet" href="/api/docs/swagger-ui/static/swagger-ui.css">
  <link rel="icon" type="image/png" href="/api/docs/swagger-ui/static/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/api/docs/swagger-ui/static/swagger-ui-bundle.js"></script>
  <script src="/api/docs/swagger-ui/static/swagger-ui-standalone-preset.js"></script>
  <script>
    window.onload = function () {
      window.ui = SwaggerUIBundle({
        url: "/api/docs/openapi.json",
        dom_id: "#swagger-ui",
        deepLinking: true,
        presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
        layout: "StandaloneLayout"
      });
    };
  </script>
</body>
</html>
"""


class OpenApiDocument:
    def __init__(self, spec: dict) -> None:
        self.body = msgspec.json.encode(spec)

    async def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = "application/json"
        resp.data = self.body


class SwaggerPage:
    async def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = "text/html; charset=utf-8"
        resp.text = _PAGE
