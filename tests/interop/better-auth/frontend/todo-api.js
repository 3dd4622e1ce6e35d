// Calling the Todo API from the browser (docs/frontend.md shows this file).
// `apiUrl` is where the Todo API is served; `getToken` returns a Better Auth JWT (see main.js).

export function todoApi(apiUrl, userId, getToken) {
  async function call(method, path = "", body) {
    const response = await fetch(`${apiUrl}/api/${encodeURIComponent(userId)}/tasks${path}`, {
      method,
      headers: {
        Authorization: `Bearer ${await getToken()}`,
        ...(body === undefined ? {} : { "Content-Type": "application/json" }),
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
    async create(task) {
      const response = await call("POST", "", task);
      return { task: await response.json(), location: response.headers.get("Location") };
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
  };
}
