// The live worklist: the server says "changed" over server-sent events (no patient data),
// then the rows are fetched again (an access-logged read) and swapped in place.
"use strict";

function agoText(iso) {
  const minutes = Math.max(0, Math.floor((Date.now() - Date.parse(iso)) / 60000));
  if (minutes < 60) return minutes + " min";
  if (minutes < 48 * 60) return Math.floor(minutes / 60) + " h " + (minutes % 60) + " min";
  return Math.floor(minutes / 1440) + " d";
}

function refreshTimes() {
  document.querySelectorAll("time[data-since]").forEach((el) => {
    el.textContent = agoText(el.getAttribute("datetime"));
  });
}

async function reloadRows(section) {
  const response = await fetch(section.dataset.rows, { credentials: "same-origin" });
  if (!response.ok) return;
  const holder = document.createElement("table");
  holder.innerHTML = await response.text();
  const fresh = holder.querySelector("tbody");
  const current = document.getElementById("worklist-rows");
  if (fresh && current) current.replaceWith(fresh);
}

function startLive() {
  const section = document.querySelector("section.worklist[data-live]");
  if (!section) return;
  const status = document.getElementById("live-status");
  const source = new EventSource(section.dataset.live);
  source.onopen = () => status && status.classList.add("on");
  source.onerror = () => status && status.classList.remove("on");
  source.addEventListener("changed", () => reloadRows(section));
  setInterval(refreshTimes, 30000);
}

document.addEventListener("DOMContentLoaded", startLive);
