// The admin centre's only script besides htmx (the Content-Security-Policy allows no inline
// script): a form with data-confirm asks before it is sent.
document.addEventListener("submit", function (ev) {
  var form = ev.target;
  var question = form.getAttribute && form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    ev.preventDefault();
  }
}, true);
