// Cancel and Re-run, for a viewer holding the API key (the HttpOnly cookie). A
// token-only viewer never sees them: the run record tells the two apart (only the
// API key is handed a fresh `token`). The cookie is SameSite=Strict, so another
// site cannot make a logged-in browser press these buttons.

const LIVE = new Set(["queued", "running"]);

async function problemText(response) {
  const body = await response.json().catch(() => null);
  return body?.detail || body?.title || `HTTP ${response.status}`;
}

export function actions({ root, cancel, rerun, error, runId, onChanged }) {
  async function post(button, path) {
    button.disabled = true;
    error.hidden = true;
    try {
      const response = await fetch(path, { method: "POST", headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error(await problemText(response));
      return await response.json();
    } catch (exc) {
      error.textContent = `${button.textContent} failed: ${exc.message}`;
      error.hidden = false;
      return null;
    } finally {
      button.disabled = false;
    }
  }

  cancel.addEventListener("click", async () => {
    if (await post(cancel, `/runs/${runId}/cancel`)) onChanged();
  });
  rerun.addEventListener("click", async () => {
    const made = await post(rerun, `/runs/${runId}/rerun`);
    if (made?.view_url) location.href = made.view_url;
  });

  /** Show what fits `run` (the record from GET /runs/{id}). */
  return function show(run) {
    const keyHolder = typeof run.token === "string";
    root.hidden = !keyHolder;
    cancel.hidden = !LIVE.has(run.status) || run.rerunnable === false;
    rerun.hidden = run.rerunnable === false; // steplog's own run, or a function not served
  };
}
