// Calling the Todo API from the browser (docs/frontend.md shows this file).
// `apiUrl` is where the Todo API is served; `getToken` returns a Better Auth JWT (see main.js).

export function todoApi(apiUrl, userId, getToken) {
  const accountUrl = `${apiUrl}/api/${encodeURIComponent(userId)}`;

  async function call(method, path = "", body, headers = {}) {
    return send(method, `${accountUrl}/tasks${path}`, body, headers);
  }

  async function send(method, url, body, headers = {}) {
    const response = await fetch(url, {
      method,
      headers: {
        Authorization: `Bearer ${await getToken()}`,
        ...(body === undefined ? {} : { "Content-Type": "application/json" }),
        ...headers,
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (!response.ok) {
      // Every error is application/problem+json: { type, title, status, detail, errors? }.
      const problem = await response.json().catch(() => ({ status: response.status }));
      throw Object.assign(new Error(problem.detail ?? response.statusText), { problem });
    }
    return response;
  }

  return {
    async list(query = {}) {
      const response = await call("GET", `?${new URLSearchParams(query)}`);
      return { tasks: await response.json(), total: Number(response.headers.get("X-Total-Count")) };
    },
    async create(task, { idempotencyKey } = {}) {
      const key = idempotencyKey ? { "Idempotency-Key": idempotencyKey } : {};
      const response = await call("POST", "", task, key);
      return {
        task: await response.json(),
        location: response.headers.get("Location"),
        replayed: response.headers.get("Idempotent-Replayed") === "true",
      };
    },
    async update(id, changes) {
      return (await call("PUT", `/${id}`, changes)).json();
    },
    async toggle(id) {
      return (await call("PATCH", `/${id}/complete`)).json();
    },
    async remove(id) {
      await call("DELETE", `/${id}`);
    },
    async setAllCompleted(completed) {
      return (await call("PATCH", "", { completed })).json(); // { updated, revision }
    },
    async clearCompleted() {
      return (await call("DELETE", "?completed=true")).json(); // { deleted, revision }
    },
    // Every task, a page at a time: follow `Link: rel="next"` until it is absent. The walk misses nothing
    // that exists throughout it; a task changed meanwhile may come twice, so keep tasks by id.
    async *pages(query = {}) {
      let url = `${accountUrl}/tasks?${new URLSearchParams(query)}`;
      while (url) {
        const response = await send("GET", url);
        yield await response.json();
        const next = /<([^>]*)>;\s*rel="next"/.exec(response.headers.get("Link") ?? "");
        url = next ? new URL(next[1], apiUrl).href : null; // a relative reference: resolve it against the API
      }
    },
    // Everything stored for the user, as a file to save: { user, tasks }.
    async exportAccount() {
      const response = await send("GET", `${accountUrl}/export`);
      return { file: await response.blob(), disposition: response.headers.get("Content-Disposition") };
    },
  };
}

// A write that may be retried safely: one key for all attempts, so a retry after a timeout or a dropped
// connection gets the first attempt's stored response (Idempotent-Replayed: true) instead of writing twice.
export async function withRetries(write, { attempts = 4, delayMs = 500 } = {}) {
  const key = crypto.randomUUID();
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await write(key);
    } catch (error) {
      const status = error.problem?.status;
      const retriable = status === undefined || status === 409 || status === 429 || status >= 500;
      if (!retriable || attempt === attempts) throw error;
      await new Promise((resolve) => setTimeout(resolve, delayMs * attempt));
    }
  }
}
