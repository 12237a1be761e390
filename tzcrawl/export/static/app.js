// Times in the reader's local time zone, and a separator before each new local day.
(function () {
  "use strict";
  var dayFormat = { weekday: "long", year: "numeric", month: "long", day: "numeric" };
  var timeFormat = { hour: "2-digit", minute: "2-digit" };
  function localDay(date) { return date.toLocaleDateString(undefined, dayFormat); }
  document.querySelectorAll("time[datetime]").forEach(function (el) {
    var date = new Date(el.getAttribute("datetime"));
    if (isNaN(date)) { return; }
    el.title = el.getAttribute("datetime");
    el.textContent = el.closest(".timeline") ? date.toLocaleTimeString(undefined, timeFormat)
                                             : date.toLocaleString();
  });
  document.querySelectorAll(".timeline").forEach(function (list) {
    var previous = null;
    Array.prototype.slice.call(list.children).forEach(function (item) {
      var stamp = item.getAttribute("data-ts");
      if (!stamp) { return; }
      var day = localDay(new Date(stamp));
      if (day !== previous) {
        var separator = document.createElement("li");
        separator.className = "day";
        separator.textContent = day;
        list.insertBefore(separator, item);
        previous = day;
      }
    });
  });
})();
