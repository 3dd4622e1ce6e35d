// A real Better Auth server on loopback, for the Todo API's interop tests.
// It also serves the small frontend page (frontend/, bundled into dist/) from its own origin, the way a
// Next.js app serves both its pages and /api/auth, and counts JWKS downloads at GET /__stats.
//
// Settings (environment): PORT (required), BETTER_AUTH_URL (default http://127.0.0.1:PORT),
// BETTER_AUTH_SECRET, JWT_ALG, JWT_EXPIRATION, JWT_AUDIENCE, ID_FORMAT=uuid, TODO_API_URL (enables account deletion).
import { readFile } from "node:fs/promises";
import { createServer } from "node:http";
import { memoryAdapter } from "better-auth/adapters/memory";
import { toNodeHandler } from "better-auth/node";
import { createAuth } from "./auth.mjs";

const port = Number(process.env.PORT);
if (!port) throw new Error("PORT is required");
const baseURL = process.env.BETTER_AUTH_URL ?? `http://127.0.0.1:${port}`;

const auth = createAuth({
  baseURL,
  secret: process.env.BETTER_AUTH_SECRET ?? "interop-test-secret-interop-test-secret",
  database: memoryAdapter({ user: [], session: [], account: [], verification: [], jwks: [] }),
  algorithm: process.env.JWT_ALG || "EdDSA",
  expirationTime: process.env.JWT_EXPIRATION || "15m",
  audience: process.env.JWT_AUDIENCE || undefined,
  uuidIds: process.env.ID_FORMAT === "uuid",
  todoApiUrl: process.env.TODO_API_URL || undefined,
});
const handleAuth = toNodeHandler(auth);

const here = new URL(".", import.meta.url);
const pages = {
  "/app/": ["frontend/index.html", "text/html; charset=utf-8"],
  "/app/main.js": ["dist/main.js", "text/javascript; charset=utf-8"],
};
let jwksFetches = 0;

const server = createServer(async (req, res) => {
  const path = new URL(req.url, baseURL).pathname;
  if (path === "/__stats") {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ jwks_fetches: jwksFetches }));
    return;
  }
  if (path in pages) {
    const [file, type] = pages[path];
    res.writeHead(200, { "content-type": type, "cache-control": "no-store" });
    res.end(await readFile(new URL(file, here)));
    return;
  }
  if (path === "/api/auth/jwks") jwksFetches += 1;
  return handleAuth(req, res);
});

server.listen(port, "127.0.0.1", () => {
  console.log(`READY ${baseURL}`);
});
for (const signal of ["SIGTERM", "SIGINT"]) process.on(signal, () => server.close(() => process.exit(0)));
