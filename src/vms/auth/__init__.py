"""Users, roles, grants and credentials: who makes a request and what it may do.

Users log in with a password (argon2id) and get a short access JWT and a rotating refresh
token (:mod:`.credentials`); integrations use scoped API keys, players a media token
for one camera and one action. A role is a set of actions and grants give cameras
(:mod:`.rbac`); every request runs as a :class:`~vms.auth.rbac.Principal` read from the catalog
(:mod:`.store`, tables in :mod:`.schema`), so a disabled user or a changed password takes effect
at once. :class:`~vms.auth.service.Auth` puts it together, and :func:`bootstrap` makes it for a
running server, logging a one-time setup token while no user exists. The design, and what is
left for later: docs/design/security.md.
"""

from vms.auth.rbac import ALL, Action, Principal
from vms.auth.service import Auth, Session, bootstrap

__all__ = ["ALL", "Action", "Auth", "Principal", "Session", "bootstrap"]
