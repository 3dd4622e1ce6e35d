"""What the tests and the benchmark share, apart from the tests themselves.

``environment``  the one configuration of a service under test, in this process or as a process
``servers``      running it: over ASGI in this process, or as ``python -m app serve``; ports, waiting, stopping
``sse``          reading a server-sent event stream from a real server, parsed as a browser parses it
``issuer``       a token issuer: keys, a JWKS endpoint on loopback, signed tokens
``tokens``       tokens built by hand, and the catalogue of tokens the service must refuse
``factories``    accounts and request bodies
``databases``    scratch PostgreSQL databases, and locks held from outside the service
``proxies``      a loopback proxy that loses the service's responses (a write done, its answer lost)
``postgres_cluster``, ``pgbouncer``, ``tls``  a throwaway PostgreSQL, a PgBouncer in front of it, certificates
``better_auth``  a real Better Auth server (Node.js) and the users who sign up with it, for tests/interop
``prerequisites``  services and tools a test needs: skipped with a reason locally, a failure under ``CI=true``

A test module imports from here, never from another test module.
"""
