// Starts Swagger UI on /docs. A file rather than FastAPI's inline snippet, so that the page runs under the
// server's Content-Security-Policy (no inline script); the bundle comes from the fastapi-offline package.
/* global SwaggerUIBundle */
window.addEventListener("DOMContentLoaded", () => {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset].filter(Boolean),
    layout: "BaseLayout",
  });
});
