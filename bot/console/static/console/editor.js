// Live compliance check in the script editor: sends the text as the operator types and redraws the
// verdict, the preview with findings highlighted and the findings table. Script text only ever
// reaches the page through textContent.
(function () {
  "use strict";
  var form = document.getElementById("draft-form");
  if (!form) { return; }
  var body = form.querySelector("textarea[name=body]");
  var token = form.querySelector("input[name=csrf_token]").value;
  var url = form.getAttribute("data-lint-url");
  var statusLine = document.getElementById("lint-status");
  var timer = null;
  var sequence = 0;

  function el(id) { return document.getElementById(id); }

  function templateNode(id) { return el(id).content.cloneNode(true); }

  function label(templateId, attr, value) {
    var node = el(templateId).content.querySelector("[" + attr + "='" + value + "']");
    return node ? node.cloneNode(true) : document.createTextNode(value);
  }

  function drawPreview(segments) {
    var preview = el("lint-preview");
    preview.textContent = "";
    segments.forEach(function (segment) {
      if (!segment.severity) {
        preview.appendChild(document.createTextNode(segment.text));
        return;
      }
      var mark = document.createElement("mark");
      mark.className = "sev-" + segment.severity;
      mark.title = segment.rules.join(", ");
      mark.textContent = segment.text;
      preview.appendChild(mark);
    });
  }

  function cell(row, text, className) {
    var td = document.createElement("td");
    if (className) {
      var inner = document.createElement(className === "code" ? "code" : "mark");
      if (className !== "code") { inner.className = className; }
      inner.textContent = text;
      td.appendChild(inner);
    } else {
      td.textContent = text;
    }
    row.appendChild(td);
  }

  function drawFindings(findings) {
    var box = el("lint-findings");
    box.textContent = "";
    if (!findings.length) { box.appendChild(templateNode("findings-none")); return; }
    var table = templateNode("findings-table");
    var tbody = table.querySelector("tbody");
    findings.forEach(function (f) {
      var row = document.createElement("tr");
      row.className = "sev-row-" + f.severity;
      var severity = document.createElement("td");
      severity.appendChild(label("severity-labels", "data-s", f.severity));
      row.appendChild(severity);
      cell(row, f.rule_id, "code");
      cell(row, f.category_label);
      cell(row, f.matched, "sev-" + f.severity);
      cell(row, f.message);
      tbody.appendChild(row);
    });
    box.appendChild(table);
  }

  function draw(result) {
    var error = el("lint-error");
    var panel = el("lint-result");
    if (result.error) {
      error.textContent = result.error;
      error.hidden = false;
      panel.hidden = true;
      return;
    }
    error.hidden = true;
    panel.hidden = false;
    var verdict = el("lint-verdict");
    verdict.textContent = "";
    verdict.appendChild(label("verdict-labels", "data-v", result.verdict));
    drawPreview(result.segments);
    drawFindings(result.findings);
  }

  function check() {
    var mine = ++sequence;
    var request = new XMLHttpRequest();
    request.open("POST", url);
    request.setRequestHeader("Content-Type", "application/json");
    request.setRequestHeader("X-CSRFToken", token);
    request.onload = function () {
      if (mine !== sequence) { return; } // a newer check is on its way
      statusLine.textContent = "";
      try { draw(JSON.parse(request.responseText)); } catch (e) { statusLine.textContent = request.statusText; }
    };
    request.onerror = function () { statusLine.textContent = request.statusText || "offline"; };
    request.send(JSON.stringify({ body: body.value }));
  }

  body.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(check, 350);
  });
})();
