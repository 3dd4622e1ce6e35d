// Calls the generated types must refuse: tests/interop/test_typescript_client.py type-checks this file and expects
// tsc to report exactly the lines marked "type error", so the check of check.ts cannot pass vacuously (an
// unresolved schema, or a header typed `unknown`, would let these through).
import type { Client } from "openapi-fetch";
import type { operations, paths } from "todo-api-schema";
import { header } from "./check";

type ListHeaders = operations["ListTasks"]["responses"][200]["headers"];
type CreateHeaders = operations["CreateTask"]["responses"][201]["headers"];

export async function wrongCalls(api: Client<paths>, userId: string, taskId: string): Promise<unknown[]> {
  const user = { path: { user_id: userId } };
  const one = { path: { user_id: userId, task_id: taskId } };
  return [
    await api.POST("/api/{user_id}/tasks", { params: user, body: { description: "no title" } }), // type error
    await api.PUT("/api/{user_id}/tasks/{task_id}", { params: one, body: { completed: "true" } }), // type error
    await api.GET("/api/{user_id}/tasks", { params: { ...user, query: { sort: "due_date" } } }), // type error
    await api.GET("/api/{user_id}/tasks/{task_id}", { params: user }), // type error
    await api.PATCH("/api/{user_id}/tasks/{task_id}", { params: one }), // type error
    await api.GET("/api/{user_id}/task", { params: user }), // type error
  ];
}

export function wrongHeaders(response: Response): [number, string] {
  const total: ListHeaders["X-Total-Count"] = response.headers.get("X-Total-Count") ?? ""; // type error
  const location: CreateHeaders["Location"] = response.status; // type error
  header<ListHeaders>(response, "X-Total"); // type error
  return [total, location];
}
