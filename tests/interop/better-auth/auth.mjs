// The Better Auth configuration the Todo API is tested against (docs/frontend.md shows this file).
// In a Next.js app this is lib/auth.ts; only `baseURL`, the `jwt()` plugin and a database matter to the API.
import { betterAuth } from "better-auth";
import { jwt } from "better-auth/plugins";

export function createAuth({
  baseURL, // the BETTER_AUTH_URL the Todo API is given
  secret, // BETTER_AUTH_SECRET
  database, // any Better Auth adapter; the tests use the in-memory one
  algorithm = "EdDSA", // the default; RS256, PS256, ES256 and ES512 work too
  expirationTime = "15m",
  audience, // leave unset: Better Auth then uses the origin of baseURL, which the API expects
  uuidIds = false, // advanced.database.generateId: "uuid" gives UUID user ids
}) {
  return betterAuth({
    baseURL,
    secret,
    database,
    emailAndPassword: { enabled: true },
    plugins: [
      jwt({
        jwks: { keyPairConfig: { alg: algorithm } },
        jwt: { expirationTime, ...(audience ? { audience } : {}) },
      }),
    ],
    ...(uuidIds ? { advanced: { database: { generateId: "uuid" } } } : {}),
    telemetry: { enabled: false },
  });
}
