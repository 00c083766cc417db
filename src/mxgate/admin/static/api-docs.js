// Starts Swagger UI on /api/v1/docs (a file, not inline: the admin centre's CSP allows no inline
// script). Requests carry the session cookie; writes also need the X-CSRF-Token header, which
// the page cannot read, so from here use "Authorize" with an API token for writes.
window.addEventListener("load", function () {
  var el = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: el.getAttribute("data-spec"),
    dom_id: "#swagger-ui",
    deepLinking: false,
    queryConfigEnabled: false,
    validatorUrl: null
  });
});
