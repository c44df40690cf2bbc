// Search by image: the file input and a drop zone post to /api/search/image, with the words to
// add or subtract and the filters of the search form, and render the grid. Without JavaScript
// the surrounding form posts to /search/image and the server renders it.
(function () {
  "use strict";
  const form = document.getElementById("upload");
  const input = document.getElementById("file");
  const zone = document.getElementById("dropzone");
  const results = document.getElementById("results");
  const message = document.getElementById("message");
  const searchForm = document.getElementById("search");
  const words = document.getElementById("upload-q");
  if (!form || !input || !zone || !results) return;

  function uploadUrl() {
    const params = searchForm ? new URLSearchParams(new FormData(searchForm)) : new URLSearchParams();
    params.delete("q");
    params.set("k", "24");
    if (words && words.value.trim()) params.set("q", words.value);
    return "/api/search/image?" + params.toString();
  }

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function render(hits, title) {
    results.replaceChildren();
    const heading = el("h2", { id: "results-heading" }, title);
    results.appendChild(heading);
    if (!hits.length) {
      results.appendChild(el("p", {}, "No matching images."));
      return;
    }
    const list = el("ol", { class: "grid", "aria-label": "Results" });
    for (const hit of hits) {
      const id = encodeURIComponent(hit.id);
      const item = el("li", { class: "card" });
      const thumb = el("a", { class: "thumb", href: "/images/" + id });
      thumb.appendChild(el("img", {
        src: "/api/images/" + id + "/thumbnail", alt: hit.name, loading: "lazy",
      }));
      const meta = el("div", { class: "meta" });
      meta.appendChild(el("a", { class: "name", href: "/images/" + id, title: hit.path }, hit.name));
      meta.appendChild(el("span", { class: "score", title: "cosine similarity" },
        hit.score.toFixed(3)));
      if (hit.date !== null && hit.date !== undefined) {
        meta.appendChild(el("time", { class: "date" },
          new Date(hit.date * 1000).toISOString().slice(0, 10)));
      }
      meta.appendChild(el("a", { class: "similar", href: "/similar/" + id }, "similar"));
      item.append(thumb, meta);
      list.appendChild(item);
    }
    results.appendChild(list);
  }

  async function search(file) {
    if (!file) return;
    message.textContent = "Searching for images like " + file.name + "…";
    const body = new FormData();
    body.append("file", file);
    try {
      const response = await fetch(uploadUrl(), {
        method: "POST", body: body, credentials: "same-origin",
      });
      const data = await response.json().catch(() => ({}));
      if (!response.ok) {
        const detail = typeof data.detail === "string" ? data.detail : response.statusText;
        message.textContent = "Could not search by this file: " + detail;
        return;
      }
      message.textContent = "";
      render(data.results, "Images like " + file.name);
    } catch (error) {
      message.textContent = "Search failed: " + error;
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    search(input.files[0]);
  });
  input.addEventListener("change", () => search(input.files[0]));
  for (const name of ["dragenter", "dragover"]) {
    zone.addEventListener(name, (event) => { event.preventDefault(); zone.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) {
    zone.addEventListener(name, () => zone.classList.remove("over"));
  }
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    const file = event.dataTransfer && event.dataTransfer.files[0];
    if (file) search(file);
  });
})();
