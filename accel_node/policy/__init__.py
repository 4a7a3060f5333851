"""Who may use this node for what: network membership, per-action rules and capability tokens.

- :mod:`.actions`: the actions (compute, assign, content, learn, capabilities) and roles;
- :mod:`.signed`: Ed25519-signed canonical-CBOR envelopes, shared by tokens and membership lists;
- :mod:`.tokens`: capability tokens (issue, bounded decoding, the acceptance checks);
- :mod:`.membership`: the membership list of a private network, signed by the owner key;
- :mod:`.rules`: allow/deny rules and the decision (pure);
- :mod:`.book`: tokens presented by peers, remembered until expiry, bounded per peer and in total;
- :mod:`.exchange`: protocol ``/accel/token/1.0.0`` (presenting tokens);
- :mod:`.service`: :class:`PolicyService`, what the node and the enforcement hooks use;
- :mod:`.quota`: what each assigning peer may make this node pin (finding 9).

Safe default (``[policy]``): open mode, every peer may fetch content and read capabilities; compute
and assignments only for members, peers with an allow rule, or holders of a valid token.
"""

from accel_node.policy.actions import ACTIONS, ASSIGN, CAPABILITIES, COMPUTE, CONTENT, LEARN
from accel_node.policy.rules import Rule
from accel_node.policy.service import PolicyService, PolicyUpdate

__all__ = [
    "ACTIONS",
    "ASSIGN",
    "CAPABILITIES",
    "COMPUTE",
    "CONTENT",
    "LEARN",
    "PolicyService",
    "PolicyUpdate",
    "Rule",
]
