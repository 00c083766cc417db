// The admin centre's only script besides htmx (the Content-Security-Policy allows no inline
// script): a form with data-confirm asks before it is sent.
document.addEventListener("submit", function (ev) {
  var form = ev.target;
  var question = form.getAttribute && form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    ev.preventDefault();
  }
}, true);

// The trace's filter form, pager and CSV link take the search from the URL here, in the browser:
// the server never writes a query parameter into a page (values set via .value are never HTML).
document.addEventListener("DOMContentLoaded", function () {
  var form = document.getElementById("trace-filter");
  if (!form) {
    return;
  }
  var params = new URLSearchParams(window.location.search);
  params.forEach(function (value, key) {
    var field = form.elements.namedItem(key);
    if (field && "value" in field) {
      field.value = value;
    }
  });
  var filters = new URLSearchParams(params);
  filters.delete("page");
  document.querySelectorAll("a[data-page]").forEach(function (a) {
    var p = new URLSearchParams(filters);
    p.set("page", a.getAttribute("data-page"));
    a.href = "/trace?" + p.toString();
  });
  var csv = document.getElementById("trace-csv");
  if (csv && filters.toString()) {
    csv.href = "/trace.csv?" + filters.toString();
  }
});
