// Demonstrations: the write page, the editor the label page shows after a ranking (edit modes), the admins' review
// list, and the word diff of an edit against the response it rewrote. Keyboard-first like the ranking page; the
// legends in the templates say the same:
//   write:  Enter submits, Shift+Enter new line, Esc leaves the text box; outside it S skips the prompt, W writes again.
//   edit:   Enter submits, Shift+Enter new line, Esc skips the edit where edits are optional (twice once the text was
//           changed, so a stray Esc never throws an edit away); where edits are required Esc leaves the box, E returns.
//   review: J/K (or the arrows) move between rows, A accepts, R puts the cursor in the reason box (Enter rejects),
//           Esc leaves the box.
// The diff is computed here, in the browser, as the labeler types (no request per keystroke): words and the spaces
// between them are the units, and Myers' algorithm finds the fewest insertions and deletions.
(function () {
  "use strict";

  // --- the word diff ------------------------------------------------------------------------------------------------

  const MAX_EDIT_DISTANCE = 2000; // beyond this many changed words, the texts are shown as replaced wholesale

  function words(text) {
    return text.replace(/\r\n?/g, "\n").match(/\s+|[^\s]+/g) || [];
  }

  // The shortest edit script between token lists a and b, as [op, token] with op "=", "-" (only in a) or "+" (only in b).
  function myers(a, b) {
    const n = a.length;
    const m = b.length;
    if (!n) return b.map((token) => ["+", token]);
    if (!m) return a.map((token) => ["-", token]);
    const max = Math.min(n + m, MAX_EDIT_DISTANCE);
    const offset = max + 1;
    const v = new Int32Array(2 * max + 3);
    const trace = [];
    let found = -1;
    for (let d = 0; d <= max && found < 0; d++) {
      trace.push(v.slice(offset - d - 1, offset + d + 2)); // v[k] for k in [-d-1, d+1], before step d
      for (let k = -d; k <= d; k += 2) {
        let x = k === -d || (k !== d && v[offset + k - 1] < v[offset + k + 1]) ? v[offset + k + 1] : v[offset + k - 1] + 1;
        let y = x - k;
        while (x < n && y < m && a[x] === b[y]) {
          x++;
          y++;
        }
        v[offset + k] = x;
        if (x >= n && y >= m) {
          found = d;
          break;
        }
      }
    }
    if (found < 0) return a.map((token) => ["-", token]).concat(b.map((token) => ["+", token]));
    const script = [];
    let x = n;
    let y = m;
    for (let d = found; d >= 0; d--) {
      const saved = trace[d];
      const at = (k) => saved[k + d + 1];
      const k = x - y;
      let prevK = 0;
      if (d > 0) prevK = k === -d || (k !== d && at(k - 1) < at(k + 1)) ? k + 1 : k - 1;
      const prevX = d > 0 ? at(prevK) : 0;
      const prevY = prevX - prevK;
      while (x > prevX && y > prevY) {
        script.push(["=", a[--x]]);
        y--;
      }
      if (d > 0) {
        if (x === prevX) script.push(["+", b[--y]]);
        else script.push(["-", a[--x]]);
      }
    }
    return script.reverse();
  }

  // Runs of one kind, with the common start and end kept out of the quadratic part.
  function wordDiff(before, after) {
    const a = words(before);
    const b = words(after);
    let start = 0;
    while (start < a.length && start < b.length && a[start] === b[start]) start++;
    let endA = a.length;
    let endB = b.length;
    while (endA > start && endB > start && a[endA - 1] === b[endB - 1]) {
      endA--;
      endB--;
    }
    const ops = a.slice(0, start).map((token) => ["=", token]);
    ops.push(...myers(a.slice(start, endA), b.slice(start, endB)));
    ops.push(...a.slice(endA).map((token) => ["=", token]));
    return readable(ops);
  }

  // Runs of one kind, each change as its removed words then its added words. A lone space between two changes joins
  // them ("a lot." → "sixteen hours daily." reads as one replacement, not three around the unchanged spaces).
  function readable(ops) {
    const runs = [];
    let removed = "";
    let added = "";
    const flush = () => {
      if (removed) runs.push({ op: "-", text: removed });
      if (added) runs.push({ op: "+", text: added });
      removed = added = "";
    };
    ops.forEach(([op, token], index) => {
      if (op === "-") removed += token;
      else if (op === "+") added += token;
      else if ((removed || added) && /^\s+$/.test(token) && ops[index + 1] && ops[index + 1][0] !== "=") {
        removed += token;
        added += token;
      } else {
        flush();
        const last = runs[runs.length - 1];
        if (last && last.op === "=") last.text += token;
        else runs.push({ op: "=", text: token });
      }
    });
    flush();
    return runs;
  }

  // Draws the diff into `target`; returns the change nodes with where each stands in the new text.
  function renderDiff(target, before, after, summary) {
    const runs = wordDiff(before, after);
    let added = 0;
    let removed = 0;
    let at = 0;
    const changes = [];
    const nodes = runs.map((run) => {
      if (run.op === "=") {
        at += run.text.length;
        return document.createTextNode(run.text);
      }
      const count = (run.text.match(/[^\s]+/g) || []).length;
      if (run.op === "+") added += count;
      else removed += count;
      const node = document.createElement(run.op === "+" ? "ins" : "del");
      node.textContent = run.text;
      changes.push({ node: node, at: at });
      if (run.op === "+") at += run.text.length;
      return node;
    });
    target.replaceChildren(...nodes);
    if (summary) summary.textContent = added || removed ? `+${added} / −${removed} words` : "no change yet";
    return changes;
  }

  // Keeps the change nearest the cursor in sight inside the diff pane (never scrolls the page).
  function showNearest(pane, changes, caret) {
    if (!changes.length) return;
    const nearest = changes.reduce((best, change) => (Math.abs(change.at - caret) < Math.abs(best.at - caret) ? change : best));
    const box = pane.getBoundingClientRect();
    const place = nearest.node.getBoundingClientRect();
    if (place.top < box.top || place.bottom > box.bottom) pane.scrollTop += place.top - box.top - box.height / 3;
  }

  // --- the editor and the writer ------------------------------------------------------------------------------------

  let active = null; // the editor or writer on screen

  function Composer(root, kind) {
    this.root = root;
    this.kind = kind; // "edit" or "write"
    this.form = root.querySelector(kind === "edit" ? ".edit-form" : ".write-form");
    this.box = this.form.querySelector("textarea[name=text]");
    this.skipForm = root.querySelector(kind === "edit" ? ".skip-edit-form" : ".skip-write-form");
    this.hint = root.querySelector("[data-hint]");
    this.initialHint = this.hint ? this.hint.textContent : "";
    this.required = kind === "edit" && root.hasAttribute("data-required");
    this.original = kind === "edit" ? root.dataset.original.replace(/\r\n?/g, "\n") : "";
    this.output = root.querySelector("[data-diff-output]");
    this.summary = root.querySelector("[data-diff-summary]");
    this.count = root.querySelector("[data-count]");
    this.startedAt = performance.now();
    this.sent = false;
    this.escArmed = false;
    this.pending = 0;
    this.box.addEventListener("input", () => this.changed());
    const reset = root.querySelector("[data-reset]");
    if (reset) {
      reset.addEventListener("click", () => {
        this.box.value = this.original;
        this.changed();
        this.focus();
      });
    }
    this.form.addEventListener("submit", (event) => {
      if (!this.ready()) event.preventDefault();
      else this.stamp();
    });
    this.render();
    this.focus();
  }

  Composer.prototype.text = function () {
    return this.box.value.replace(/\r\n?/g, "\n");
  };

  Composer.prototype.edited = function () {
    return this.text().trim() !== this.original.trim();
  };

  Composer.prototype.say = function (message) {
    if (this.hint) this.hint.textContent = message;
  };

  Composer.prototype.changed = function () {
    this.escArmed = false;
    if (this.sent) return;
    this.say(this.initialHint);
    // One diff per animation frame at most, however fast the typing.
    if (!this.pending) this.pending = requestAnimationFrame(() => ((this.pending = 0), this.render()));
  };

  Composer.prototype.render = function () {
    if (this.kind === "edit" && this.output) {
      const changes = renderDiff(this.output, this.original, this.text(), this.summary);
      showNearest(this.output, changes, this.box.selectionEnd);
    }
    if (this.count) this.count.textContent = `${this.text().trim().length.toLocaleString()} / ${Number(this.box.maxLength).toLocaleString()} characters`;
  };

  Composer.prototype.focus = function () {
    this.box.focus();
    if (this.kind === "edit") this.box.setSelectionRange(this.box.value.length, this.box.value.length);
  };

  Composer.prototype.ready = function () {
    if (this.sent) return false;
    if (!this.text().trim()) {
      this.say(this.kind === "edit" ? "Your answer is empty: write the response you would want." : "Write an answer first.");
      return false;
    }
    if (this.kind === "edit" && !this.edited()) {
      this.say(this.required ? "Change the response first: this project asks for an edit." : "Change the response first, or press Esc to skip the edit.");
      return false;
    }
    return true;
  };

  Composer.prototype.stamp = function () {
    this.sent = true;
    this.form.querySelector("[name=time_spent_ms]").value = Math.round(performance.now() - this.startedAt);
  };

  Composer.prototype.submit = function () {
    if (this.ready()) this.form.requestSubmit(); // the submit listener stamps the time
  };

  Composer.prototype.skip = function () {
    if (!this.skipForm || this.sent) return false;
    if (this.kind === "edit" && this.edited() && !this.escArmed) {
      this.escArmed = true;
      this.say("Press Esc again to throw your edit away and skip it.");
      return true;
    }
    this.sent = true;
    this.skipForm.requestSubmit();
    return true;
  };

  function typing(event) {
    const tag = event.target.tagName;
    return tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || event.target.isContentEditable;
  }

  function onComposerKey(event) {
    const composer = active;
    if (event.isComposing || event.ctrlKey || event.metaKey || event.altKey) return false;
    if (event.target === composer.box) {
      if (event.key === "Enter" && !event.shiftKey) composer.submit();
      else if (event.key === "Escape") {
        if (composer.kind === "write" || composer.required) composer.box.blur();
        else composer.skip();
      } else return false;
      return true;
    }
    if (typing(event)) return false;
    if (event.target.closest && event.target.closest("button, a, summary") && (event.key === "Enter" || event.key === " ")) return false;
    const key = event.key.length === 1 ? event.key.toUpperCase() : event.key;
    if (key === "Enter") composer.submit();
    else if (key === "Escape" && composer.kind === "edit" && !composer.required) composer.skip();
    else if (key === "S" && composer.kind === "write") composer.skip();
    else if ((key === "W" && composer.kind === "write") || (key === "E" && composer.kind === "edit")) composer.focus();
    else return false;
    return true;
  }

  // --- the review list ------------------------------------------------------------------------------------------------

  function reviewRows() {
    return Array.from(document.querySelectorAll(".review-row"));
  }

  function selectRow(row) {
    reviewRows().forEach((other) => other.classList.toggle("selected", other === row));
    if (row) {
      row.focus({ preventScroll: true });
      row.scrollIntoView({ block: "nearest" });
    }
  }

  function selectedRow() {
    return document.querySelector(".review-row.selected");
  }

  function onReviewKey(event) {
    const rows = reviewRows();
    if (!rows.length) return false;
    const row = selectedRow();
    if (typing(event)) {
      if (event.key !== "Escape") return false;
      event.target.blur();
      if (row) row.focus({ preventScroll: true });
      return true;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return false;
    const key = event.key.length === 1 ? event.key.toUpperCase() : event.key;
    const index = rows.indexOf(row);
    if (key === "J" || key === "ArrowDown") selectRow(rows[Math.min(index + 1, rows.length - 1)]);
    else if (key === "K" || key === "ArrowUp") selectRow(rows[Math.max(index - 1, 0)]);
    else if (key === "A" && row) row.querySelector(".accept-form").requestSubmit();
    else if (key === "R" && row) {
      const reason = row.querySelector(".reject-form [name=reason]");
      reason.focus();
      reason.select();
    } else return false;
    return true;
  }

  document.addEventListener("keydown", (event) => {
    let handled = false;
    if (active && document.body.contains(active.root)) handled = onComposerKey(event);
    else if (document.querySelector(".review-list")) handled = onReviewKey(event);
    if (handled) event.preventDefault();
  });

  // A request that brought nothing back (the network, a server error) leaves the form on screen: it may be sent again.
  document.addEventListener("htmx:afterRequest", () => {
    if (active && document.body.contains(active.root)) active.sent = false;
  });

  // A click selects a review row; a reviewed row hands the selection to the next one.
  document.addEventListener("click", (event) => {
    const row = event.target.closest && event.target.closest(".review-row");
    if (row && row !== selectedRow()) {
      reviewRows().forEach((other) => other.classList.toggle("selected", other === row));
    }
  });

  function init(scope) {
    const find = (selector) => (scope.matches && scope.matches(selector) ? scope : null) || scope.querySelector(selector);
    const editor = find(".editor");
    const writer = find(".writer");
    const root = editor || writer;
    if (root && !(active && active.root === root)) active = new Composer(root, editor ? "edit" : "write");
    (scope.matches && scope.matches("[data-diff]") ? [scope] : Array.from(scope.querySelectorAll("[data-diff]"))).forEach((block) =>
      renderDiff(block, block.dataset.original, block.dataset.edited)
    );
    if (scope.matches && scope.matches(".review-row")) {
      if (scope.hasAttribute("data-reviewed")) {
        const rows = reviewRows();
        selectRow(rows[rows.indexOf(scope) + 1] || scope);
      } else selectRow(scope);
    } else if (scope.querySelector && scope.querySelector(".review-row") && !selectedRow()) selectRow(reviewRows()[0]);
  }

  // At once for the page (a deferred script runs once the document is parsed), then for every fragment htmx swaps in.
  init(document);
  if (window.htmx) htmx.onLoad((element) => element !== document.body && init(element));

  window.prefloopWordDiff = wordDiff; // for the browser tests
})();
