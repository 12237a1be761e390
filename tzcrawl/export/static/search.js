// Search without a server: the history's text is split into shards (search/*.js, plain script files,
// since a page opened from disk may not fetch files). Shards load one by one on the first search.
(function () {
  "use strict";
  var loaded = {}, items = [], form = document.getElementById("search");
  var status = document.getElementById("status"), results = document.getElementById("results");
  window.tzSearch = { add: function (page, kind, rows) {
    rows.forEach(function (row) { items.push({ page: page, kind: kind, id: row[0], text: row[1], lower: row[1].toLowerCase() }); });
  } };
  function load(index, done) {
    var shards = window.TZ_SHARDS || [];
    if (index >= shards.length) { done(); return; }
    if (loaded[shards[index]]) { load(index + 1, done); return; }
    var script = document.createElement("script");
    script.src = "search/" + shards[index];
    script.onload = function () { loaded[shards[index]] = true; status.textContent = "loading " + (index + 1) + " of " + shards.length; load(index + 1, done); };
    script.onerror = function () { loaded[shards[index]] = true; load(index + 1, done); };
    document.body.appendChild(script);
  }
  function show(query) {
    var needle = query.toLowerCase(), found = 0, limit = 500;
    results.textContent = "";
    for (var i = 0; i < items.length; i++) {
      var at = items[i].lower.indexOf(needle);
      if (at < 0) { continue; }
      found += 1;
      if (found > limit) { continue; }
      var li = document.createElement("li"), link = document.createElement("a"), snippet = document.createElement("div");
      link.href = items[i].page + "#" + (items[i].kind === "memory" ? "mem-" : "m-") + items[i].id;
      link.textContent = (items[i].kind === "memory" ? "memory" : "message") + " on " + items[i].page;
      snippet.className = "snippet";
      snippet.textContent = items[i].text.slice(Math.max(0, at - 80), at + needle.length + 120);
      li.appendChild(link); li.appendChild(snippet); results.appendChild(li);
    }
    status.textContent = found + " found" + (found > limit ? " (first " + limit + " shown)" : "");
  }
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var query = document.getElementById("q").value.trim();
    if (!query) { return; }
    status.textContent = "searching…";
    load(0, function () { show(query); });
  });
})();
