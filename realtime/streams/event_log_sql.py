"""The event log's plain-SQL statements, one set per database vendor (see ``EventLog.append_batch``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Statements:
    # Each takes its rows as one JSON array of arrays, expanded by the database.
    insert_events: str  # params: created_at, [[stream_id, offset, event, data, sender_id, client_id], ...]
    select_keys: str  # params: [[sender_id, client_id], ...]
    read_since: str  # params: stream name, since, limit


READ_SINCE = """
    SELECT e."offset", e.event, e.data FROM realtime_event e JOIN realtime_stream s ON s.id = e.stream_id
    WHERE s.name = %s AND e."offset" > %s ORDER BY e."offset" LIMIT %s
"""

# Both databases probe the (sender, client_id) unique index once per key (EXPLAIN-checked).
SQL = {
    "sqlite": Statements(  # JSON1 is built in (RETURNING already needs 3.35)
        insert_events="""
            INSERT INTO realtime_event (stream_id, "offset", event, data, sender_id, client_id, created_at)
            SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
                   json_extract(value, '$[3]'), json_extract(value, '$[4]'), json_extract(value, '$[5]'), %s
            FROM json_each(%s)
        """,
        select_keys="""
            WITH k AS (
                SELECT json_extract(value, '$[0]') AS sender_id, json_extract(value, '$[1]') AS client_id
                FROM json_each(%s)
            )
            SELECT e.sender_id, e.client_id, s.name, e."offset", e.event, e.data
            FROM k JOIN realtime_event e ON e.sender_id = k.sender_id AND e.client_id = k.client_id
            JOIN realtime_stream s ON s.id = e.stream_id
            WHERE e.client_id IS NOT NULL
        """,
        read_since=READ_SINCE,
    ),
    "postgresql": Statements(
        insert_events="""
            INSERT INTO realtime_event (stream_id, "offset", event, data, sender_id, client_id, created_at)
            SELECT (v->>0)::bigint, (v->>1)::bigint, v->>2, v->3, (v->>4)::bigint, v->>5, %s
            FROM jsonb_array_elements(%s::jsonb) AS v
        """,
        select_keys="""
            WITH k AS (
                SELECT (v->>0)::bigint AS sender_id, v->>1 AS client_id FROM jsonb_array_elements(%s::jsonb) AS v
            )
            SELECT e.sender_id, e.client_id, s.name, e."offset", e.event, e.data
            FROM k JOIN realtime_event e ON e.sender_id = k.sender_id AND e.client_id = k.client_id
            JOIN realtime_stream s ON s.id = e.stream_id
            WHERE e.client_id IS NOT NULL
        """,
        read_since=READ_SINCE,
    ),
}
