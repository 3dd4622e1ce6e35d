// The test frontend: signs a user up with the Better Auth client, gets a JWT with authClient.token(),
// then drives the Todo API with todoApi(). The Python test reads window.__result.
import { createAuthClient } from "better-auth/client";
import { jwtClient } from "better-auth/client/plugins";
import { todoApi, withRetries } from "./todo-api.js";
import { todoSync } from "./todo-sync.js";

export const authClient = createAuthClient({
  baseURL: window.location.origin, // the Better Auth server (in Next.js: your app's own origin)
  plugins: [jwtClient()],
});

async function getToken() {
  const { data, error } = await authClient.token();
  if (error) throw new Error(`no token: ${error.message ?? error.status}`);
  return data.token;
}

const params = new URLSearchParams(window.location.search);
const apiUrl = params.get("api");

async function run() {
  const email = params.get("email");
  const signUp = await authClient.signUp.email({ email, password: "interop-password-1", name: "Browser User" });
  if (signUp.error) throw new Error(`sign-up failed: ${signUp.error.message}`);
  const userId = signUp.data.user.id;

  const api = todoApi(apiUrl, userId, getToken);
  const steps = [];
  const created = await api.create({ title: "Written by the browser", description: "via fetch" });
  steps.push({ step: "create", id: created.task.id, location: created.location });
  const listed = await api.list();
  steps.push({ step: "list", ids: listed.tasks.map((t) => t.id), total: listed.total });
  const toggled = await api.toggle(created.task.id);
  steps.push({ step: "toggle", completed: toggled.completed });
  const updated = await api.update(created.task.id, { title: "Renamed by the browser" });
  steps.push({ step: "update", title: updated.title });
  await api.remove(created.task.id);
  const after = await api.list();
  steps.push({ step: "delete", total: after.total });
  return { userId, steps };
}

// Two tabs of one signed-in user: "sync-listen" keeps a replica live, "sync-write" changes a task.
async function listen() {
  const { data: session } = await authClient.getSession();
  const sync = todoSync(apiUrl, session.user.id, getToken, {
    onChange: (change) => window.__changes.push({ ...change, seenAt: Date.now() }),
  });
  window.__changes = [];
  window.__replica = () => [...sync.replica.values()];
  await sync.pull();
  await new Promise((resolve) => {
    sync.live({ signal: new AbortController().signal, onOpen: resolve });
  });
  return { userId: session.user.id, revision: sync.revision };
}

async function write() {
  const { data: session } = await authClient.getSession();
  const api = todoApi(apiUrl, session.user.id, getToken);
  const { task } = await withRetries((key) => api.create({ title: "Made in another tab" }, { idempotencyKey: key }));
  return { userId: session.user.id, id: task.id, writtenAt: Date.now() };
}

// Pages, the export, then the account deleted through Better Auth (whose hook erases it in the API).
async function account() {
  const email = params.get("email");
  const signUp = await authClient.signUp.email({ email, password: "interop-password-1", name: "Leaving User" });
  if (signUp.error) throw new Error(`sign-up failed: ${signUp.error.message}`);
  const userId = signUp.data.user.id;
  const api = todoApi(apiUrl, userId, getToken);
  for (const title of ["one", "two", "three", "four", "five"]) await api.create({ title });

  const pages = [];
  for await (const tasks of api.pages({ limit: 2 })) pages.push(tasks.map((task) => task.title));
  const { file, disposition } = await api.exportAccount();
  const exported = JSON.parse(await file.text());
  const { error } = await authClient.deleteUser();
  if (error) throw new Error(`deleting the account failed: ${error.message ?? error.status}`);
  return { userId, pages, disposition, exported: exported.tasks.map((task) => task.title), user: exported.user };
}

async function signUpOnly() {
  const email = params.get("email");
  const signUp = await authClient.signUp.email({ email, password: "interop-password-1", name: "Browser User" });
  if (signUp.error) throw new Error(`sign-up failed: ${signUp.error.message}`);
  return { userId: signUp.data.user.id };
}

const scenarios = { crud: run, account, "sign-up": signUpOnly, "sync-listen": listen, "sync-write": write };
scenarios[params.get("scenario") ?? "crud"]().then(
  (result) => { window.__result = { ok: true, ...result }; },
  (error) => { window.__result = { ok: false, error: String(error), problem: error.problem ?? null }; },
);
