"""The actions a peer may ask this node for, and the roles a peer can have.

One name per thing a remote peer can make this node spend or reveal:

- ``compute``: run inference for it (shard stage RUNs, remote inference);
- ``assign``: make this node serve a stage (fetch and pin a plan, load a stage);
- ``content``: fetch blocks (Bitswap, bulk block channels);
- ``learn``: join learning rounds (no protocol uses it yet; rules and tokens may name it already);
- ``capabilities``: read this node's capability record.

Roles: ``member`` (listed in the network's signed membership list) and ``any`` (every peer).
"""

from __future__ import annotations

COMPUTE = "compute"
ASSIGN = "assign"
CONTENT = "content"
LEARN = "learn"
CAPABILITIES = "capabilities"
ACTIONS: tuple[str, ...] = (COMPUTE, ASSIGN, CONTENT, LEARN, CAPABILITIES)

MEMBER = "member"
ANY = "any"
ROLES: tuple[str, ...] = (MEMBER, ANY)
ROLE_PREFIX = "role:"

SAFE_OPEN_ACTIONS: tuple[str, ...] = (CONTENT, CAPABILITIES)
"""The documented default for peers with no role, rule or token: discovery and content serving."""
