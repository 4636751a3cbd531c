// The connected-system form shows the chosen connector's own settings: picking another type reloads the page
// with ?connector_type=… so the server renders that connector's fields (labels, help, defaults, required marks).
document.addEventListener("DOMContentLoaded", function () {
  var select = document.getElementById("id_connector_type");
  if (!select) return;
  select.addEventListener("change", function () {
    var url = new URL(window.location.href);
    url.searchParams.set("connector_type", select.value);
    window.location.assign(url.toString());
  });
});
