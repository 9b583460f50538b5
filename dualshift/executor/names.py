"""Names dualshift gives to the objects it creates in the user's database.

Two schemas: `dualshift` holds only what application code needs through the Supabase API (`flags`,
read; `failed_writes`, insert); `dualshift_private` holds everything else (state, audit, checkpoints,
verify runs, trigger functions) and is never exposed. Generated names are cut to PostgreSQL's 63 bytes
with a hash of the whole name, so two long names never collide.
"""

from __future__ import annotations

import hashlib

API_SCHEMA = "dualshift"
PRIVATE_SCHEMA = "dualshift_private"
MAX_IDENTIFIER_BYTES = 63
# A cluster-wide NOLOGIN role every sync-trigger role of every database is a member of: dualshift's own
# restrictive policies let its members through (see create.py), whatever the database is called later.
SYNC_GROUP = "dualshift_sync"
# Set by a compatibility view's INSTEAD OF trigger for the length of its write: the old name written
# through, so the reverse sync of twins puts the write back in that twin only.
VIA_SETTING = "dualshift.via"
# Set beside VIA_SETTING to 'insert' while an insert through a twin's view merges into the row another twin
# inserted (an UPDATE of the new table): the reverse sync then inserts it into the twin written through.
VIA_INSERT_SETTING = "dualshift.via_insert"


def ensure_sync_group() -> str:
    """SQL creating SYNC_GROUP if missing (roles are cluster-wide: two databases may race to create it)."""
    return (
        f"DO $$BEGIN CREATE ROLE {SYNC_GROUP} NOLOGIN; "
        "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END$$"
    )


def fit(*parts: str) -> str:
    """`part1_part2_…`, or, when longer than 63 bytes, its first bytes and a hash of the whole."""
    name = "_".join(parts)
    if len(name.encode()) <= MAX_IDENTIFIER_BYTES:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    head = name.encode()[: MAX_IDENTIFIER_BYTES - len(digest) - 1].decode(errors="ignore")
    return f"{head}_{digest}"
