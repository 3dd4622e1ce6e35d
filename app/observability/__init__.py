"""What the service tells its operators: request ids, logs, the audit trail and metrics, in one place.

- ``request_id.py``: the id that ties a request's ``X-Request-ID`` header, log line and audit events together.
- ``logging.py``: the JSON (or text) shape of every standard-library log line.
- ``request_log.py``: structlog, one line per request, around the whole application.
- ``audit.py``: the ``app.audit`` logger, one JSON line per security-relevant event.
- ``metrics.py``: Prometheus metrics and ``/metrics``.
- ``failures.py``: the ``after_exception`` hook that audits, counts and logs refused and failed requests.

Nothing is imported here: a module that needs one counter (app/auth/keys.py) need not load structlog and the
exception observer with it, and an import names the module a thing lives in.
"""
