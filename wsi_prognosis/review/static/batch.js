// The batch page works without JavaScript (a GET form); this only applies a filter as soon as it changes.
(function () {
  "use strict";
  var form = document.getElementById("filters");
  if (!form) { return; }
  Array.prototype.forEach.call(form.querySelectorAll("select"), function (select) {
    select.addEventListener("change", function () { form.submit(); });
  });
})();
