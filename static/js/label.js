// The ranking builder: keyboard-first, drag-and-drop too. The ranking is a list of tiers (best first) of response
// letters, as shown on the cards; ties share a tier. It is always shown as text ("D > C > A = B") and posted as JSON
// in the `tiers` field ([["D"], ["C"], ["A", "B"]]). The page carries no response ids: the server maps letters back.
(function () {
  "use strict";

  let current = null; // the builder of the item on screen

  function Builder(root) {
    this.root = root;
    this.form = root.querySelector(".rank-form");
    this.letters = {}; // the letters on screen; a response is named by its letter
    root.querySelectorAll(".response").forEach((card) => (this.letters[card.dataset.letter] = card.dataset.letter));
    this.tiers = [];
    this.history = [];
    this.tieNext = false;
    // A saved ranking (the revise page) is replayed as if typed letter by letter, so Backspace takes its letters
    // back one at a time, worst first, exactly as on the labeling page.
    const initial = root.dataset.initial ? JSON.parse(root.dataset.initial) : [];
    initial.forEach((tier) =>
      tier.forEach((id, index) => {
        if (this.letters[id] === undefined) return;
        this.history.push(JSON.stringify(this.tiers));
        if (index === 0) this.tiers.push([id]);
        else this.tiers[this.tiers.length - 1].push(id);
      })
    );
    this.hint = "";
    this.startedAt = performance.now();
    this.bindDragAndDrop();
    this.render();
  }

  Builder.prototype.placed = function () {
    return new Set(this.tiers.flat());
  };

  Builder.prototype.complete = function () {
    return this.placed().size === Object.keys(this.letters).length;
  };

  Builder.prototype.change = function (update) {
    this.hint = "";
    this.history.push(JSON.stringify(this.tiers));
    update();
    this.tiers = this.tiers.filter((tier) => tier.length > 0);
    this.render();
  };

  Builder.prototype.undo = function () {
    this.hint = "";
    if (this.tieNext) {
      this.tieNext = false;
    } else if (this.history.length) {
      this.tiers = JSON.parse(this.history.pop());
    }
    this.render();
  };

  // Delete: start over (one Backspace brings the whole ranking back).
  Builder.prototype.clear = function () {
    this.tieNext = false;
    this.hint = "";
    if (this.tiers.length) this.change(() => (this.tiers = []));
    else this.render();
  };

  Builder.prototype.pressLetter = function (letter) {
    const id = this.letters[letter];
    if (id === undefined) return;
    if (this.placed().has(id)) {
      this.hint = letter + " is already placed: Backspace takes back the last letter, Delete clears the ranking.";
      this.render();
      return;
    }
    const tie = this.tieNext && this.tiers.length > 0;
    this.change(() => {
      if (tie) this.tiers[this.tiers.length - 1].push(id);
      else this.tiers.push([id]);
    });
    this.tieNext = false;
    this.render();
  };

  Builder.prototype.remove = function (id) {
    this.tiers.forEach((tier) => {
      const at = tier.indexOf(id);
      if (at >= 0) tier.splice(at, 1);
    });
  };

  // Drop on a tier: tie with it. Drop on a gap: a new tier at that position. Drop on the pool: unranked.
  Builder.prototype.drop = function (id, target) {
    this.change(() => {
      const tierIndex = target.dataset.tier !== undefined ? Number(target.dataset.tier) : null;
      const gapIndex = target.dataset.gap !== undefined ? Number(target.dataset.gap) : null;
      const keep = tierIndex !== null ? this.tiers[tierIndex] : null;
      this.remove(id);
      if (keep) keep.push(id);
      else if (gapIndex !== null) this.tiers.splice(this.gapPosition(gapIndex), 0, [id]);
    });
  };

  // Gaps are numbered against the tiers as drawn; removing the dragged response may empty its tier first.
  Builder.prototype.gapPosition = function (gapIndex) {
    const drawn = this.drawnTiers;
    let position = 0;
    for (let i = 0; i < gapIndex && i < drawn.length; i++) {
      if (drawn[i].some((id) => this.placed().has(id))) position++;
    }
    return position;
  };

  Builder.prototype.text = function () {
    if (!this.tiers.length) return "—";
    return this.tiers.map((tier) => tier.map((id) => this.letters[id]).sort().join(" = ")).join(" > ");
  };

  Builder.prototype.chip = function (id) {
    const chip = document.createElement("span");
    chip.className = "chip";
    chip.draggable = true;
    chip.dataset.letter = id;
    chip.textContent = this.letters[id];
    return chip;
  };

  Builder.prototype.gap = function (index) {
    const gap = document.createElement("li");
    gap.className = "gap";
    gap.dataset.gap = index;
    gap.setAttribute("aria-label", "Drop here for a new tier");
    return gap;
  };

  Builder.prototype.render = function () {
    const list = this.root.querySelector("[data-tiers]");
    const pool = this.root.querySelector("[data-pool]");
    this.drawnTiers = this.tiers.map((tier) => tier.slice());
    list.replaceChildren(this.gap(0));
    this.tiers.forEach((tier, index) => {
      const item = document.createElement("li");
      item.className = "tier";
      item.dataset.tier = index;
      const rank = document.createElement("span");
      rank.className = "rank";
      rank.textContent = index + 1;
      const byLetter = tier.slice().sort((a, b) => this.letters[a].localeCompare(this.letters[b]));
      item.append(rank, ...byLetter.map((id) => this.chip(id)));
      list.append(item, this.gap(index + 1));
    });
    const label = pool.querySelector(".meta");
    const placed = this.placed();
    const unranked = Object.keys(this.letters).sort().filter((letter) => !placed.has(letter));
    pool.replaceChildren(label, ...unranked.map((letter) => this.chip(letter)));
    this.root.querySelector("[data-ranking-text]").textContent = this.text() + (this.tieNext ? " =" : "");
    const places = {};
    this.tiers.forEach((tier, index) => tier.forEach((id) => (places[id] = index + 1)));
    this.root.querySelectorAll(".response").forEach((card) => {
      const place = places[card.dataset.letter];
      card.querySelector("[data-place]").textContent = place ? "#" + place : "";
      card.classList.toggle("ranked", Boolean(place));
    });
    this.form.querySelector("[name=tiers]").value = JSON.stringify(this.tiers);
    this.form.querySelector(".submit").disabled = !this.complete();
    const hint = this.root.querySelector("[data-hint]");
    if (hint) hint.textContent = this.hint;
  };

  Builder.prototype.bindDragAndDrop = function () {
    this.root.addEventListener("dragstart", (event) => {
      const source = event.target.closest("[data-letter]");
      if (!source) return;
      event.dataTransfer.setData("text/plain", source.dataset.letter);
      event.dataTransfer.effectAllowed = "move";
    });
    this.root.addEventListener("dragover", (event) => {
      if (event.target.closest("[data-tier], [data-gap], [data-pool]")) {
        event.preventDefault();
        event.dataTransfer.dropEffect = "move";
      }
    });
    this.root.addEventListener("dragenter", (event) => {
      const target = event.target.closest("[data-tier], [data-gap], [data-pool]");
      if (target) target.classList.add("over");
    });
    this.root.addEventListener("dragleave", (event) => {
      const target = event.target.closest("[data-tier], [data-gap], [data-pool]");
      if (target) target.classList.remove("over");
    });
    this.root.addEventListener("drop", (event) => {
      const target = event.target.closest("[data-tier], [data-gap], [data-pool]");
      if (!target) return;
      event.preventDefault();
      const id = event.dataTransfer.getData("text/plain");
      if (this.letters[id] !== undefined) this.drop(id, target);
    });
  };

  Builder.prototype.submit = function () {
    if (!this.complete()) return;
    this.form.querySelector("[name=time_spent_ms]").value = Math.round(performance.now() - this.startedAt);
    this.form.requestSubmit();
  };

  // S and F open the skip or flag form inside the ranking bar and put the cursor in its reason box; Enter sends it,
  // Escape closes it.
  Builder.prototype.reveal = function (selector) {
    const form = this.root.querySelector(selector);
    if (!form) return;
    this.root.querySelectorAll(".skip-form, .flag-form").forEach((other) => (other.hidden = other !== form));
    form.hidden = false;
    const box = form.querySelector("[name=reason]");
    box.focus();
    box.scrollIntoView({ block: "nearest" });
  };

  Builder.prototype.closeForms = function () {
    let closed = false;
    this.root.querySelectorAll(".skip-form, .flag-form").forEach((form) => {
      if (!form.hidden) closed = true;
      form.hidden = true;
    });
    return closed;
  };

  function typing(event) {
    const tag = event.target.tagName;
    return tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || event.target.isContentEditable;
  }

  // Keys (the legend in _keyboard_help.html says the same): letters rank; = ties; Backspace takes back the last
  // step; Delete clears; Enter submits; S skips; F flags (Shift+F always flags, F alone ranks F when there is a
  // response F); Escape leaves a text box or closes the skip/flag form.
  document.addEventListener("keydown", (event) => {
    // A key pressed between htmx's swap of the next item and its load event (after the settle) is for the new item.
    if (!current || !document.body.contains(current.root)) init(document);
    if (!current || !document.body.contains(current.root)) return;
    if (typing(event)) {
      const form = event.target.closest(".skip-form, .flag-form");
      if (event.key === "Escape") {
        if (form) form.hidden = true;
        event.target.blur();
        event.preventDefault();
      } else if (event.key === "Enter" && !event.shiftKey && event.target.tagName !== "INPUT") {
        // A select (the flag reason) does not submit its form on Enter; a textarea (the rationale) would add a line.
        if (form) form.requestSubmit();
        else if (event.target.closest(".rank-form")) current.submit();
        else return;
        event.preventDefault();
      }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.target.closest && event.target.closest("button, a, summary") && (event.key === "Enter" || event.key === " ")) return;
    const key = event.key.length === 1 ? event.key.toUpperCase() : event.key;
    if (key === "Enter") current.submit();
    else if (key === "Backspace") current.undo();
    else if (key === "Delete") current.clear();
    else if (key === "Escape") {
      if (!current.closeForms()) return;
    } else if (key === "=") {
      if (current.tiers.length && !current.complete()) current.tieNext = true;
      current.render();
    } else if (key === "S" && !(key in current.letters)) current.reveal(".skip-form");
    else if (key === "F" && (event.shiftKey || !(key in current.letters))) current.reveal(".flag-form");
    else if (key in current.letters) current.pressLetter(key);
    else return;
    event.preventDefault();
  });

  // The Skip and Flag buttons of the ranking bar do what S and F do.
  document.addEventListener("click", (event) => {
    const button = event.target.closest && event.target.closest("[data-reveal]");
    if (!button || !current || !current.root.contains(button)) return;
    current.reveal(button.dataset.reveal);
  });

  function init(scope) {
    const root = (scope.matches && scope.matches(".ranker") ? scope : null) || scope.querySelector(".ranker");
    if (root && !(current && current.root === root)) current = new Builder(root);
  }

  // At once for the page (a deferred script runs once the document is parsed): htmx announces the page's first load
  // from a timer after DOMContentLoaded, and keys pressed before it would be lost. Then for every item htmx swaps in.
  init(document);
  if (window.htmx) htmx.onLoad(init);
})();
