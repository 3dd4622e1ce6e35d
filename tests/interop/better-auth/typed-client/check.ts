// A typed client of the Todo API: every operation of the service's OpenAPI document, called through openapi-fetch
// with the types openapi-typescript generates from it ("todo-api-schema"). Nothing runs it: it must type-check
// (tests/interop/test_typescript_client.py), which proves the document gives a frontend everything it needs.
import createClient from "openapi-fetch";
import type { components, operations, paths } from "todo-api-schema";

type Task = components["schemas"]["TaskRead"];
type Problem = components["schemas"]["ProblemDetails"];

// The response headers the document types. openapi-fetch hands back the raw `Response`; these say what is in it.
type ListHeaders = operations["ListTasks"]["responses"][200]["headers"];
type CreateHeaders = operations["CreateTask"]["responses"][201]["headers"];
type TaskHeaders =
  | operations["GetTask"]["responses"][200]["headers"]
  | operations["UpdateTask"]["responses"][200]["headers"]
  | operations["ToggleTaskCompletion"]["responses"][200]["headers"];

// Exactly these types: a header without a schema would be `unknown`, which any value can be assigned to.
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
type Expect<T extends true> = T;
export type HeaderTypes = [
  Expect<Equal<ListHeaders["X-Total-Count"], number>>,
  Expect<Equal<CreateHeaders["Location"], string>>,
  Expect<Equal<CreateHeaders["ETag"], string>>,
  Expect<Equal<TaskHeaders["ETag"], string>>,
  Expect<Equal<operations["ListTasks"]["responses"][401]["headers"]["WWW-Authenticate"], string>>,
  Expect<Equal<operations["CreateTask"]["responses"][429]["headers"]["Retry-After"], number>>,
  Expect<Equal<operations["GetReadiness"]["responses"][503]["headers"]["Retry-After"], number>>,
];

/** The headers a response documents by name (without the `[name: string]: unknown` every header map has). */
type Documented<H> = keyof { [K in keyof H as string extends K ? never : K]: H[K] } & string;

/** A header the document marks required for this response (so `name` cannot be misspelt). */
export function header<H>(response: Response, name: Documented<H>): string {
  const value = response.headers.get(name);
  if (value === null) {
    throw new Error(`${response.status} without ${name}`);
  }
  return value;
}

class ApiProblem extends Error {
  constructor(readonly problem: Problem) {
    super(problem.detail);
  }
}

/** Every operation once, as a frontend would chain them; the types carry each result into the next call. */
export async function everyOperation(baseUrl: string, userId: string, token: string): Promise<number> {
  const api = createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${token}` } });
  const user = { path: { user_id: userId } };

  // GetLiveness and GetReadiness
  const live = await api.GET("/health");
  const ready = await api.GET("/health/ready");
  if (live.data?.status !== "ok" || ready.error) {
    const retryAfter: number = Number(header<operations["GetReadiness"]["responses"][503]["headers"]>(ready.response, "Retry-After"));
    throw new Error(`not ready (${JSON.stringify(ready.error?.checks)}), retry in ${retryAfter}s`);
  }

  // CreateTask
  // (the same Idempotency-Key on a retry gets this response back, Idempotent-Replayed, instead of a second task)
  const created = await api.POST("/api/{user_id}/tasks", {
    params: { ...user, header: { "Idempotency-Key": `create-${userId}-1` } },
    body: { title: "Buy milk" },
  });
  if (created.error) {
    const fields: string[] = (created.error.errors ?? []).map((error) => `${error.source} ${error.field}`);
    throw new ApiProblem({ ...created.error, detail: `${created.error.detail} ${fields.join(", ")}` });
  }
  const task: Task = created.data;
  const location: CreateHeaders["Location"] = header<CreateHeaders>(created.response, "Location");
  const replayed: boolean = created.response.headers.get("Idempotent-Replayed") === "true";
  let etag: TaskHeaders["ETag"] = header<CreateHeaders>(created.response, "ETag");

  // ListTasks
  const listed = await api.GET("/api/{user_id}/tasks", {
    params: { ...user, query: { completed: false, q: "milk", sort: "-updated_at", limit: 50, offset: 0 } },
  });
  if (listed.error) {
    throw new ApiProblem(listed.error);
  }
  const tasks: Task[] = listed.data;
  const total: ListHeaders["X-Total-Count"] = Number(header<ListHeaders>(listed.response, "X-Total-Count"));

  // GetTask: 304 while our copy is current
  const one = { path: { user_id: userId, task_id: task.id } };
  const fetched = await api.GET("/api/{user_id}/tasks/{task_id}", {
    params: { ...one, header: { "If-None-Match": etag } },
  });
  if (fetched.response.status !== 304) {
    if (fetched.error) {
      throw new ApiProblem(fetched.error);
    }
    etag = header<TaskHeaders>(fetched.response, "ETag");
  }

  // UpdateTask: only if nobody changed the task since we read it (else 412)
  const updated = await api.PUT("/api/{user_id}/tasks/{task_id}", {
    params: { ...one, header: { "If-Match": etag } },
    body: { title: "Buy oat milk", description: null },
  });
  if (updated.error) {
    throw new ApiProblem(updated.error);
  }
  etag = header<TaskHeaders>(updated.response, "ETag");

  // ToggleTaskCompletion
  const toggled = await api.PATCH("/api/{user_id}/tasks/{task_id}/complete", {
    params: { ...one, header: { "If-Match": etag } },
  });
  if (toggled.error) {
    throw new ApiProblem(toggled.error);
  }
  const completed: boolean = toggled.data.completed;
  etag = header<TaskHeaders>(toggled.response, "ETag");

  // MoveTask: first in the manual order (`after: null`)
  const moved = await api.POST("/api/{user_id}/tasks/{task_id}/move", { params: one, body: { after: null } });
  if (moved.error) {
    throw new ApiProblem(moved.error);
  }
  const position: string = moved.data.position;
  etag = header<TaskHeaders>(moved.response, "ETag");

  // SetAllTasksCompleted ("toggle all") and DeleteCompletedTasks ("clear completed")
  const all = await api.PATCH("/api/{user_id}/tasks", { params: user, body: { completed: true } });
  if (all.error) {
    throw new ApiProblem(all.error);
  }
  const cleared = await api.DELETE("/api/{user_id}/tasks", { params: { ...user, query: { completed: true } } });
  if (cleared.error) {
    throw new ApiProblem(cleared.error);
  }
  const bulk: number = all.data.updated + cleared.data.deleted + cleared.data.revision;

  // ListTaskChanges: a full sync, then nothing new since the revision it reached; `op` tells the changes apart
  const replica = new Map<string, Task>();
  let since = 0;
  for (;;) {
    const feed = await api.GET("/api/{user_id}/tasks/changes", { params: { ...user, query: { since, limit: 100 } } });
    if (feed.error) {
      throw new ApiProblem(feed.error);
    }
    for (const change of feed.data.changes) {
      if (change.op === "upsert") {
        replica.set(change.task.id, change.task);
      } else {
        replica.delete(change.id);
      }
    }
    since = feed.data.revision;
    if (!feed.data.has_more) {
      break;
    }
  }

  // StreamTaskEvents: live from the revision the feed reached (text/event-stream, read as a stream)
  const events = await api.GET("/api/{user_id}/tasks/events", {
    params: { ...user, header: { "Last-Event-ID": String(since) } },
    parseAs: "stream",
  });
  if (events.error) {
    throw new ApiProblem(events.error);
  }
  await events.data?.cancel();

  // DeleteTask
  const deleted = await api.DELETE("/api/{user_id}/tasks/{task_id}", {
    params: { ...one, header: { "If-Match": etag } },
  });
  if (deleted.error) {
    throw new ApiProblem(deleted.error);
  }

  // ExportAccount: the whole account as one typed document.
  const exported = await api.GET("/api/{user_id}/export", { params: user });
  if (exported.error) {
    throw new ApiProblem(exported.error);
  }
  const exportedTasks: number = exported.data.tasks.length + exported.data.user.id.length;

  // EraseAccount: everything stored for the user, gone.
  const erased = await api.DELETE("/api/{user_id}", { params: user });
  if (erased.error) {
    throw new ApiProblem(erased.error);
  }

  return exportedTasks + location.length + tasks.length + total + Number(completed) + bulk + replica.size + since + Number(replayed) + position.length;
}
