-- The event log. Positions come from a sequence, so appends run concurrently; readers
-- use eventfold_safe_position() so that an event committed out of position order is
-- never skipped (see the comments on the two functions below).

CREATE SEQUENCE eventfold_positions AS bigint START 1;

CREATE TABLE eventfold_events (
    global_position bigint      PRIMARY KEY,
    stream_id       text        NOT NULL,
    category        text        NOT NULL,
    stream_version  bigint      NOT NULL,
    event_id        uuid        NOT NULL,
    event_type      text        NOT NULL,
    schema_version  integer     NOT NULL,
    data            jsonb       NOT NULL,
    metadata        jsonb       NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT eventfold_events_event_id_key UNIQUE (event_id),
    CONSTRAINT eventfold_events_stream_version_key UNIQUE (stream_id, stream_version)
);

CREATE INDEX eventfold_events_category_position ON eventfold_events (category, global_position);

-- In-flight appenders register with a shared transaction-level advisory lock whose key
-- is (namespace 0x4546 << 48) | (a lower bound of the positions they are about to take).
-- Readers never read at or beyond the oldest such bound (eventfold_safe_position).
-- Only our appenders take these locks, so an unrelated transaction, even one idle for
-- hours, never holds the readers back.

-- Appends events to one stream, checking the expected version:
--   p_expected >= 0: exactly that version; -1: any; -2: no stream; -3: stream exists.
-- Raises SQLSTATE EF409 with the actual version (-1: no stream) in DETAIL on mismatch.
CREATE FUNCTION eventfold_append(
    p_stream_id       text,
    p_category        text,
    p_expected        bigint,
    p_event_ids       uuid[],
    p_event_types     text[],
    p_schema_versions integer[],
    p_data            text[],
    p_metadata        text[]
) RETURNS TABLE (o_position bigint, o_version bigint, o_recorded_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    v_current bigint;
BEGIN
    -- 1. Register as in flight BEFORE taking positions: every position this transaction
    --    takes below is greater than the sequence's value read here, so the lock key is
    --    a lower bound of them for as long as the transaction runs.
    PERFORM pg_advisory_xact_lock_shared(
        (17734::bigint << 48) | (COALESCE(pg_sequence_last_value('eventfold_positions'), 0) + 1));

    SELECT max(e.stream_version) INTO v_current
    FROM eventfold_events e WHERE e.stream_id = p_stream_id;
    v_current := COALESCE(v_current, -1);

    IF (p_expected = -2 AND v_current <> -1)
       OR (p_expected = -3 AND v_current = -1)
       OR (p_expected >= 0 AND v_current <> p_expected) THEN
        RAISE EXCEPTION 'wrong expected version' USING ERRCODE = 'EF409', DETAIL = v_current::text;
    END IF;

    -- 2. Take positions in event order (volatile target-list expressions are evaluated
    --    after the sort) and insert. A concurrent append to the same stream makes the
    --    (stream_id, stream_version) key collide: the caller retries or reports a conflict.
    RETURN QUERY
    INSERT INTO eventfold_events AS e
        (global_position, stream_id, category, stream_version, event_id, event_type,
         schema_version, data, metadata)
    SELECT nextval('eventfold_positions'), p_stream_id, p_category, v_current + u.ord,
           u.id, u.typ, u.sv, u.data::jsonb, u.meta::jsonb
    FROM unnest(p_event_ids, p_event_types, p_schema_versions, p_data, p_metadata)
         WITH ORDINALITY AS u(id, typ, sv, data, meta, ord)
    ORDER BY u.ord
    RETURNING e.global_position, e.stream_version, e.recorded_at;
END
$$;

-- The highest position below which every event is settled: committed and visible to a
-- statement that starts after this function returns, or never going to commit.
--
-- 1. Read the last position handed out (non-transactional, so it includes appends that
--    have not committed yet). Every such position belongs to an appender that took its
--    in-flight lock before taking the position.
-- 2. Then look at the in-flight locks. An appender holding a position <= that value is
--    either finished (its commit is visible: PostgreSQL makes a commit visible before it
--    releases locks) or still holds a lock whose key is <= its positions.
-- The caller must read events in a LATER statement (a fresh snapshot), never in the same
-- one: a statement's snapshot is taken before this function runs.
CREATE FUNCTION eventfold_safe_position() RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_allocated bigint;
    v_oldest    bigint;
BEGIN
    v_allocated := COALESCE(pg_sequence_last_value('eventfold_positions'), 0);
    SELECT min(((l.classid::bigint << 32) | l.objid::bigint) & 281474976710655) INTO v_oldest
    FROM pg_locks l
    WHERE l.locktype = 'advisory'
      AND l.objsubid = 1
      AND l.database = (SELECT d.oid FROM pg_database d WHERE d.datname = current_database())
      AND (l.classid::bigint >> 16) = 17734;
    IF v_oldest IS NOT NULL AND v_oldest - 1 < v_allocated THEN
        RETURN v_oldest - 1;
    END IF;
    RETURN v_allocated;
END
$$;
