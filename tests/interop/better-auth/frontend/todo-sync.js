// Keeping a local replica of the user's tasks equal to the server's (docs/frontend.md shows this file).
// pull(): full sync from revision 0, then incremental syncs from the last revision seen.
// live(): server-sent events read with fetch (EventSource cannot send an Authorization header), resumed
// with Last-Event-ID after every disconnect, so nothing is missed and nothing applied twice.

export function todoSync(apiUrl, userId, getToken, { onChange = () => {} } = {}) {
  const tasksUrl = `${apiUrl}/api/${encodeURIComponent(userId)}/tasks`;
  const replica = new Map(); // task id -> task, as GET /tasks would show it
  let revision = 0; // the last revision applied: the next `since`

  function apply(change) {
    if (change.op === "upsert") replica.set(change.task.id, change.task);
    else replica.delete(change.id);
    onChange(change);
  }

  function resync() {
    // 410: changes since our revision are no longer kept (tombstones expire). Start again from 0.
    replica.clear();
    revision = 0;
  }

  async function pull() {
    for (;;) {
      const response = await fetch(`${tasksUrl}/changes?since=${revision}`, {
        headers: { Authorization: `Bearer ${await getToken()}` },
      });
      if (response.status === 410) {
        resync();
        continue;
      }
      if (!response.ok) throw new Error(`change feed: ${response.status}`);
      const page = await response.json();
      page.changes.forEach(apply);
      revision = page.revision;
      if (!page.has_more) return revision;
    }
  }

  async function live({ signal, onOpen = () => {}, retryMs = 1000 } = {}) {
    while (!signal?.aborted) {
      try {
        const response = await fetch(`${tasksUrl}/events`, {
          headers: {
            Authorization: `Bearer ${await getToken()}`, // a fresh token on every reconnect
            Accept: "text/event-stream",
            "Last-Event-ID": String(revision), // replay what was missed, then live
          },
          signal,
        });
        if (response.status === 410) {
          resync();
          await pull();
          continue;
        }
        if (!response.ok) throw new Error(`event stream: ${response.status}`);
        onOpen();
        for await (const event of serverSentEvents(response.body)) {
          if (event.event !== "upsert" && event.event !== "delete") continue;
          apply(JSON.parse(event.data));
          revision = Number(event.id);
        }
      } catch (error) {
        if (signal?.aborted) return;
      }
      // The stream ended (token expiry, a deploy, a network change): reconnect after a pause.
      await new Promise((resolve) => setTimeout(resolve, retryMs));
    }
  }

  return { replica, pull, live, get revision() { return revision; } };
}

// The text/event-stream format (WHATWG HTML §9.2): fields per line, a blank line ends an event, ":" a comment.
export async function* serverSentEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = { id: undefined, event: "message", data: [] };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    const lines = buffer.split(/\r\n|\r|\n/);
    buffer = lines.pop(); // an incomplete last line waits for more
    for (const line of lines) {
      if (line === "") {
        if (event.data.length) yield { id: event.id, event: event.event, data: event.data.join("\n") };
        event = { id: event.id, event: "message", data: [] };
        continue;
      }
      if (line.startsWith(":")) continue; // a heartbeat
      const colon = line.indexOf(":");
      const field = colon === -1 ? line : line.slice(0, colon);
      const value = colon === -1 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "data") event.data.push(value);
      else if (field === "event") event.event = value;
      else if (field === "id") event.id = value;
    }
  }
}
