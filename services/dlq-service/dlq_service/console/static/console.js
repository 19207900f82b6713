// The console's only script: parts of a page marked data-refresh-url are swapped for the fragment the server renders
// there every data-refresh-s seconds (escaped by the server's templates), until the fragment says data-final.
"use strict";

function refresh(region) {
  const url = region.dataset.refreshUrl;
  const every = Math.max(1, Number(region.dataset.refreshS || "5")) * 1000;
  let timer = null;
  const tick = async () => {
    try {
      const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" }, redirect: "error" });
      if (response.ok) {
        const parsed = new DOMParser().parseFromString(await response.text(), "text/html");
        region.replaceChildren(...parsed.body.childNodes);
        region.dataset.refreshedAt = String(Date.now());
        if (region.querySelector("[data-final]")) {
          window.clearInterval(timer);
        }
      }
    } catch (error) {
      region.dataset.refreshError = String(error);
    }
  };
  timer = window.setInterval(tick, every);
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-refresh-url]").forEach(refresh);
});
