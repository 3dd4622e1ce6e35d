// The Better Auth configuration the Todo API is tested against (docs/frontend.md shows this file).
// In a Next.js app this is lib/auth.ts; only `baseURL`, the `jwt()` plugin and a database matter to the API,
// and `user.deleteUser` to have a deleted account's tasks erased there too.
import { betterAuth } from "better-auth";
import { APIError } from "better-auth/api";
import { jwt } from "better-auth/plugins";

export function createAuth({
  baseURL, // the BETTER_AUTH_URL the Todo API is given
  secret, // BETTER_AUTH_SECRET
  database, // any Better Auth adapter; the tests use the in-memory one
  algorithm = "EdDSA", // the default; RS256, PS256, ES256 and ES512 work too
  expirationTime = "15m",
  audience, // leave unset: Better Auth then uses the origin of baseURL, which the API expects
  uuidIds = false, // advanced.database.generateId: "uuid" gives UUID user ids
  todoApiUrl, // the Todo API's base URL: deleting an account erases everything the API holds for it
}) {
  const auth = betterAuth({
    baseURL,
    secret,
    database,
    emailAndPassword: { enabled: true },
    user: {
      deleteUser: {
        enabled: Boolean(todoApiUrl),
        // Before, not after: if the API cannot erase, the deletion stops here and the user can try again,
        // rather than leaving tasks behind that nobody can reach any more. DELETE /api/{id} is idempotent.
        beforeDelete: async (user) => eraseTodoAccount(auth, todoApiUrl, user.id),
      },
    },
    plugins: [
      jwt({
        jwks: { keyPairConfig: { alg: algorithm } },
        jwt: { expirationTime, ...(audience ? { audience } : {}) },
      }),
    ],
    ...(uuidIds ? { advanced: { database: { generateId: "uuid" } } } : {}),
    telemetry: { enabled: false },
  });
  return auth;
}

// DELETE /api/{user_id} on the Todo API, as the user: a token Better Auth signs for them on the server
// (`signJWT` is server-only), so the hook works however the deletion was confirmed (fresh session,
// password, or the emailed link).
async function eraseTodoAccount(auth, todoApiUrl, userId) {
  const { token } = await auth.api.signJWT({
    body: { payload: { sub: userId, iat: Math.floor(Date.now() / 1000) } },
  });
  const status = await fetch(`${todoApiUrl}/api/${encodeURIComponent(userId)}`, {
    method: "DELETE",
    headers: { authorization: `Bearer ${token}` },
  }).then(
    (response) => response.status,
    () => "unreachable",
  );
  if (status !== 204) {
    throw new APIError("BAD_GATEWAY", { message: `The Todo API did not erase the account (${status})` });
  }
}
