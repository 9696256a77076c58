"""The Braze lookup responder: which emails, user ids and anonymous ids name an existing profile."""

from sqlalchemy import ARRAY, Text, bindparam, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kernel.contracts import BrazeKnown, BrazeLookup, KnownPerson
from kernel.db import unit_of_work

# The most recently seen profile with each email (Braze updates that one), with one anonymous id for a
# profile that has no user id; the email is compared as profiles_email_search indexes it.
_BY_EMAIL = text(
    "SELECT DISTINCT ON (lower(p.traits ->> 'email')) lower(p.traits ->> 'email'), p.user_id, "
    "(SELECT i.value FROM profiles.identities AS i WHERE i.workspace_id = p.workspace_id AND i.profile_id = p.profile_id "
    " AND i.kind = 'anonymous' ORDER BY i.created_at, i.value LIMIT 1) "
    "FROM profiles.profiles AS p WHERE p.workspace_id = :ws AND lower(p.traits ->> 'email') = ANY(:emails) "
    "ORDER BY lower(p.traits ->> 'email'), p.last_seen DESC, p.profile_id"
).bindparams(bindparam("emails", type_=ARRAY(Text)))
_IDENTITIES = text(
    "SELECT kind, value FROM profiles.identities WHERE workspace_id = :ws AND "
    "((kind = 'user' AND value = ANY(:users)) OR (kind = 'anonymous' AND value = ANY(:anonymous)))"
).bindparams(bindparam("users", type_=ARRAY(Text)), bindparam("anonymous", type_=ARRAY(Text)))


async def on_lookup(query: BrazeLookup, sessions: async_sessionmaker[AsyncSession]) -> BrazeKnown:
    """Answer which of the people a /users/track or /users/identify call names exist."""
    async with unit_of_work(sessions) as session:
        emails = {}
        if query.emails:
            rows = await session.execute(_BY_EMAIL, {"ws": query.workspace_id, "emails": query.emails})
            emails = {email: KnownPerson(user_id=user_id, anonymous_id=anonymous) for email, user_id, anonymous in rows}
        found: dict[str, list[str]] = {"user": [], "anonymous": []}
        if query.user_ids or query.anonymous_ids:
            rows = await session.execute(
                _IDENTITIES, {"ws": query.workspace_id, "users": query.user_ids, "anonymous": query.anonymous_ids}
            )
            for kind, value in rows:
                found[kind].append(value)
    return BrazeKnown(emails=emails, user_ids=sorted(found["user"]), anonymous_ids=sorted(found["anonymous"]))
