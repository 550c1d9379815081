"use strict";
const message = document.getElementById("message");
const rows = document.getElementById("jobs");

document.getElementById("submit").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const body = { kind: form.get("kind"), params: { seconds: Number(form.get("seconds")) } };
  try {
    const answer = await fetch("/api/jobs", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    const data = await answer.json();
    message.textContent = answer.ok ? `job ${data.id} queued` : `error ${answer.status}: ${data.error}`;
  } catch (err) {
    message.textContent = `error: ${err}`;
  }
  refresh();
});

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (cls) td.className = cls;
  return td;
}

async function refresh() {
  try {
    const answer = await fetch("/api/jobs?limit=20");
    if (!answer.ok) return;
    const data = await answer.json();
    rows.replaceChildren(...data.jobs.map((job) => {
      const tr = document.createElement("tr");
      tr.append(cell(job.id), cell(job.kind), cell(job.status, job.status), cell(job.runs),
                cell(job.finished_by), cell(job.error));
      return tr;
    }));
  } catch (err) { /* the next tick tries again */ }
}

refresh();
setInterval(refresh, 1000);
