"""Live sync: each change of a user's tasks pushed to their open event streams, on every instance.

``hub``       the streams of this process, by user, within their bounds; wakes those a change concerns
``listener``  PostgreSQL's NOTIFY of every process's changes, on one LISTEN connection per process
``stream``    one stream as a raw ASGI response: server-sent events, heartbeats, bounded writes, its end
``events``    the route, ``GET /api/{user_id}/tasks/events``: refuses before the stream starts, or starts it
``plugin``    the concern wired into the app: route, hub, listener, and streams ended on SIGTERM
"""

from app.sync.plugin import LiveEvents

__all__ = ("LiveEvents",)
