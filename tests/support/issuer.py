"""A token issuer for the tests: real keys, a real JWKS endpoint on loopback, and tokens signed by them.

The JWKS server is a plain HTTP server in a thread, so the service under test fetches keys over a real
socket exactly as it does from Better Auth. It counts fetches and can be made to fail or stall.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

ISSUER = "http://127.0.0.1:3000"
AUDIENCE = "http://127.0.0.1:3000"
HS_SECRET = "test-shared-secret-that-is-long-enough-0123456789"


@dataclass
class SigningKey:
    """A private key, the algorithm it signs with and its public JWK."""

    kid: str
    algorithm: str
    private_key: Any

    @property
    def public_jwk(self) -> dict[str, Any]:
        public = self.private_key.public_key()
        if self.algorithm == "EdDSA":
            jwk = json.loads(OKPAlgorithm.to_jwk(public))
        elif self.algorithm.startswith(("RS", "PS")):
            jwk = json.loads(RSAAlgorithm.to_jwk(public))
        else:
            jwk = json.loads(ECAlgorithm.to_jwk(public))
        return {**jwk, "kid": self.kid, "alg": self.algorithm, "use": "sig"}

    @property
    def public_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def new_key(algorithm: str, kid: str | None = None) -> SigningKey:
    """Generate a fresh key pair for ``algorithm``."""
    if algorithm == "EdDSA":
        private: Any = ed25519.Ed25519PrivateKey.generate()
    elif algorithm.startswith(("RS", "PS")):
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif algorithm == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
    elif algorithm == "ES384":
        private = ec.generate_private_key(ec.SECP384R1())
    elif algorithm == "ES512":
        private = ec.generate_private_key(ec.SECP521R1())
    else:  # pragma: no cover - test setup error
        raise ValueError(algorithm)
    return SigningKey(
        kid=kid or f"{algorithm.lower()}-{secrets.token_hex(6)}", algorithm=algorithm, private_key=private
    )


@dataclass
class JWKSServer:
    """Serves ``{"keys": [...]}`` at ``/jwks`` and ``/api/auth/jwks``; counts requests."""

    keys: list[SigningKey] = field(default_factory=list)
    status: int = 200
    delay: float = 0.0
    fetches: int = 0
    _server: ThreadingHTTPServer | None = None

    def start(self) -> JWKSServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path not in {"/jwks", "/api/auth/jwks"}:
                    self.send_error(404)
                    return
                owner.fetches += 1
                if owner.delay:
                    time.sleep(owner.delay)
                body = json.dumps({"keys": [k.public_jwk for k in owner.keys]}).encode()
                try:
                    self.send_response(owner.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the service gave up waiting (the slow-JWKS tests make it)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        return self

    @property
    def origin(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def url(self) -> str:
        return f"{self.origin}/jwks"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def mint(
    sub: str | None,
    key: SigningKey | None = None,
    *,
    secret: str | None = None,
    algorithm: str | None = None,
    expires_in: int = 600,
    not_before: int | None = None,
    issuer: str | None = ISSUER,
    audience: str | None = AUDIENCE,
    kid: str | object | None = ...,
    omit: tuple[str, ...] = (),
    **claims: Any,
) -> str:
    """Sign a token. With ``secret`` it is HS256; otherwise it is signed by ``key``."""
    now = int(time.time())
    payload: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + expires_in, "iss": issuer, "aud": audience}
    if not_before is not None:
        payload["nbf"] = now + not_before
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None and k not in omit}
    headers: dict[str, Any] = {}
    if secret is not None:
        return jwt.encode(payload, secret, algorithm=algorithm or "HS256")
    assert key is not None
    headers["kid"] = key.kid if kid is ... else kid
    if headers["kid"] is None:
        del headers["kid"]
    return jwt.encode(payload, key.private_key, algorithm=algorithm or key.algorithm, headers=headers)
