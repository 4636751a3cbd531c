// Starts Swagger UI on /api/docs/. A file rather than an inline script: the CSP allows scripts from 'self' only.
"use strict";
(function () {
  const root = document.getElementById("swagger-ui");
  const csrfToken = root.dataset.csrfToken;
  window.ui = SwaggerUIBundle({
    url: root.dataset.schemaUrl,
    dom_id: "#swagger-ui",
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    layout: "BaseLayout",
    deepLinking: true,
    persistAuthorization: false,
    requestInterceptor: function (request) {
      // Writes from a browser session need Django's CSRF token; API-key calls ignore it.
      if (request.method && request.method !== "GET" && csrfToken) {
        request.headers["X-CSRFToken"] = csrfToken;
      }
      return request;
    },
  });
})();
