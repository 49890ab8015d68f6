// gradlab report: sort and filter the summary table, show the run a row points to.
// Plain JavaScript, no library. The state lives in the URL fragment, so a view can be
// bookmarked or opened directly: report.html#sort=-M_init&verdict=vanishing&run=3
// (sort: a column's header, "-" in front for descending; status, verdict: filters;
// run: the row number of the run shown).
(function () {
  "use strict";
  var table = document.getElementById("summary-table");
  var body = table.tBodies[0];
  var headers = Array.prototype.slice.call(table.tHead.rows[0].cells);
  var keys = headers.map(function (th) { return th.getAttribute("data-key"); });
  var original = Array.prototype.slice.call(body.rows);
  var runs = Array.prototype.slice.call(document.querySelectorAll("section.run"));
  var statusFilter = document.getElementById("filter-status");
  var verdictFilter = document.getElementById("filter-verdict");
  var rowCount = document.getElementById("row-count");
  var FIELDS = ["sort", "status", "verdict", "run"];
  document.body.classList.add("scripted");

  function parse(hash) {
    var state = {sort: "", status: "", verdict: "", run: ""};
    hash.replace(/^#/, "").split("&").forEach(function (part) {
      var at = part.indexOf("=");
      if (at < 0) { return; }
      var name = decodeURIComponent(part.slice(0, at));
      if (FIELDS.indexOf(name) >= 0) { state[name] = decodeURIComponent(part.slice(at + 1)); }
    });
    if (!state.run && runs.length === 1) { state.run = "1"; }
    return state;
  }

  function serialize(state) {
    return FIELDS.filter(function (name) { return state[name]; }).map(function (name) {
      return name + "=" + encodeURIComponent(state[name]);
    }).join("&");
  }

  function go(changes) {
    var state = parse(location.hash);
    Object.keys(changes).forEach(function (name) { state[name] = changes[name]; });
    location.hash = serialize(state);
  }

  // a cell's value for sorting: a number (data-sort holds it exactly), else its text;
  // empty cells and nan sort last in either direction
  function value(row, index) {
    var cell = row.cells[index];
    var exact = cell.getAttribute("data-sort");
    if (exact !== null) {
      var number = Number(exact.replace("inf", "Infinity"));
      return isNaN(number) ? null : {number: number};
    }
    var text = cell.textContent.trim();
    return text === "" ? null : {text: text};
  }

  function compare(a, b) {
    if (a === null || b === null) { return a === b ? 0 : (a === null ? 1 : -1); }
    if ("number" in a && "number" in b) { return a.number - b.number; }
    if ("number" in a) { return -1; }  // numbers before text
    if ("number" in b) { return 1; }
    return a.text.localeCompare(b.text, undefined, {numeric: true});
  }

  function sortRows(sort) {
    var descending = sort.charAt(0) === "-";
    var index = keys.indexOf(descending ? sort.slice(1) : sort);
    var rows = original.slice();
    headers.forEach(function (th, i) {
      if (i === index) { th.setAttribute("aria-sort", descending ? "descending" : "ascending"); }
      else { th.removeAttribute("aria-sort"); }
    });
    if (index >= 0) {
      var order = rows.map(function (row, position) {
        return {row: row, value: value(row, index), position: position};
      });
      order.sort(function (a, b) {
        var missing = a.value === null || b.value === null;
        var result = compare(a.value, b.value);
        if (descending && !missing) { result = -result; }
        return result || a.position - b.position;
      });
      rows = order.map(function (item) { return item.row; });
    }
    rows.forEach(function (row) { body.appendChild(row); });
    return rows;
  }

  function showRun(number) {
    runs.forEach(function (section) {
      var shown = section.getAttribute("data-run") === number;
      section.classList.toggle("shown", shown);
      if (!shown) { return; }
      // report in the page how many of the run's figures the browser drew: an SVG whose
      // drawing has an extent (a figure the browser could not parse has none)
      var drawn = Array.prototype.filter.call(section.querySelectorAll("figure > svg"),
        function (svg) { var box = svg.getBBox(); return box.width > 0 && box.height > 0; });
      section.setAttribute("data-figures-shown", drawn.length);
    });
    original.forEach(function (row) {
      row.classList.toggle("selected", row.getAttribute("data-run") === number);
    });
  }

  function apply() {
    var state = parse(location.hash);
    var rows = sortRows(state.sort);
    statusFilter.value = state.status;
    verdictFilter.value = state.verdict;
    var visible = 0;
    rows.forEach(function (row) {
      var keep = (!state.status || row.getAttribute("data-status") === state.status) &&
                 (!state.verdict || row.getAttribute("data-verdict") === state.verdict);
      row.hidden = !keep;
      visible += keep ? 1 : 0;
    });
    rowCount.textContent = visible === rows.length ?
      rows.length + (rows.length === 1 ? " run" : " runs") :
      visible + " of " + rows.length + " runs";
    showRun(state.run);
    var section = document.getElementById("run=" + state.run);
    if (section && runs.length > 1) { section.scrollIntoView(); }
  }

  headers.forEach(function (th) {
    th.querySelector("button").addEventListener("click", function () {
      var key = th.getAttribute("data-key");
      var current = parse(location.hash).sort;
      go({sort: current === key ? "-" + key : key});
    });
  });
  body.addEventListener("click", function (event) {
    var row = event.target.closest("tr");
    if (!row) { return; }
    event.preventDefault();
    go({run: row.getAttribute("data-run")});
  });
  document.querySelectorAll("section.run a[href='#']").forEach(function (link) {
    link.addEventListener("click", function (event) {
      event.preventDefault();
      go({run: ""});
      table.scrollIntoView();
    });
  });
  statusFilter.addEventListener("change", function () { go({status: statusFilter.value}); });
  verdictFilter.addEventListener("change", function () { go({verdict: verdictFilter.value}); });
  window.addEventListener("hashchange", apply);
  apply();
}());
