-- Group commit: many appends, each to one stream with its own expected version, in one
-- transaction and one round trip. The appends are decided as if they ran one after
-- another in array order (so two appends to the same stream in one group chain), and
-- each is decided on its own: one that conflicts or collides fails alone.
--
-- Arguments: the group's distinct streams (p_streams, p_categories); per append, the
-- index of its stream (p_stream_of, 1-based), its expectation (p_expected, the codes of
-- eventfold_append) and its number of events (p_counts); per event, in append order, its
-- append (p_event_append, 1-based), its offset in it (p_event_offset, from 0) and the
-- event columns. Returns one row per append, in order:
--   o_status 0: committed; o_first_position/o_last_position/o_first_version tell where.
--   o_status 1: the stream is at o_actual (-1: no stream), which the expectation does not
--               accept; nothing written.
--   o_status 2: collided with another transaction's append to the stream or with an event
--               id stored already; nothing written: the caller decides it alone.
-- Not p_careful (the fast path): all accepted events go in one INSERT, and a collision
-- fails the whole call with unique_violation (SQLSTATE 23505), writing nothing; the caller
-- then calls again with p_careful, which appends one by one, each in a subtransaction of
-- its own, so only the appends that collide fail. Subtransactions cost, and collisions
-- are rare (the same stream written by two groups at once, a retried append), so the
-- common path does without them.
CREATE FUNCTION eventfold_append_group(
    p_streams         text[],
    p_categories      text[],
    p_stream_of       integer[],
    p_expected        bigint[],
    p_counts          integer[],
    p_event_append    integer[],
    p_event_offset    integer[],
    p_event_ids       uuid[],
    p_event_types     text[],
    p_schema_versions integer[],
    p_data            text[],
    p_metadata        text[],
    p_careful         boolean
) RETURNS TABLE (o_append integer, o_status integer, o_first_position bigint,
                 o_last_position bigint, o_first_version bigint, o_actual bigint)
LANGUAGE plpgsql
-- Array arguments make the planner re-plan the statements inside on every call (custom
-- plans look cheaper); the generic plans are as good and save a third of a small group's
-- time.
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_n       integer := coalesce(cardinality(p_expected), 0);
    v_current bigint[];
    v_base    bigint[] := array_fill(NULL::bigint, ARRAY[v_n]);
    v_status  integer[] := array_fill(0, ARRAY[v_n]);
    v_actual  bigint[] := array_fill(NULL::bigint, ARRAY[v_n]);
    v_lo      bigint[] := array_fill(NULL::bigint, ARRAY[v_n]);
    v_hi      bigint[] := array_fill(NULL::bigint, ARRAY[v_n]);
    v_positions bigint[];
    v_cur     bigint;
    v_exp     bigint;
    v_one_lo  bigint;
    v_one_hi  bigint;
    v_start   integer;
    v_k       integer;
BEGIN
    IF v_n = 0 THEN
        RETURN;
    END IF;
    -- Registered as in flight before taking positions, as in eventfold_append: the key is
    -- a lower bound of every position this transaction takes, bulk or one by one.
    PERFORM pg_advisory_xact_lock_shared(
        (17734::bigint << 48) | (COALESCE(pg_sequence_last_value('eventfold_positions'), 0) + 1));

    IF NOT p_careful THEN
        SELECT array_agg(COALESCE(m.v, -1) ORDER BY s.ord) INTO v_current
        FROM unnest(p_streams) WITH ORDINALITY AS s(id, ord)
        LEFT JOIN LATERAL (SELECT max(e.stream_version) AS v FROM eventfold_events e
                           WHERE e.stream_id = s.id) m ON true;

        -- Decide every append against the versions as the earlier appends of the group
        -- leave them.
        FOR i IN 1..v_n LOOP
            v_k := p_stream_of[i];
            v_cur := v_current[v_k];
            v_exp := p_expected[i];
            IF (v_exp = -2 AND v_cur <> -1) OR (v_exp = -3 AND v_cur = -1)
               OR (v_exp >= 0 AND v_cur <> v_exp) THEN
                v_status[i] := 1;
                v_actual[i] := v_cur;
            ELSE
                v_base[i] := v_cur + 1;
                v_current[v_k] := v_cur + p_counts[i];
            END IF;
        END LOOP;

        -- Every accepted event in one INSERT, positions taken in event order.
        WITH ins AS (
            INSERT INTO eventfold_events AS e
                (global_position, stream_id, category, stream_version, event_id, event_type,
                 schema_version, data, metadata)
            SELECT nextval('eventfold_positions'), p_streams[p_stream_of[u.app]],
                   p_categories[p_stream_of[u.app]], v_base[u.app] + u.rel, u.id, u.typ, u.sv,
                   u.data::jsonb, u.meta::jsonb
            FROM unnest(p_event_append, p_event_offset, p_event_ids, p_event_types,
                        p_schema_versions, p_data, p_metadata)
                 WITH ORDINALITY AS u(app, rel, id, typ, sv, data, meta, ord)
            WHERE v_base[u.app] IS NOT NULL
            ORDER BY u.ord
            RETURNING e.global_position
        )
        SELECT array_agg(ins.global_position ORDER BY ins.global_position) INTO v_positions
        FROM ins;
        -- Positions were taken in event order, so the accepted appends own consecutive
        -- runs of the sorted positions, in append order.
        v_start := 1;
        FOR i IN 1..v_n LOOP
            IF v_base[i] IS NOT NULL THEN
                v_lo[i] := v_positions[v_start];
                v_start := v_start + p_counts[i];
                v_hi[i] := v_positions[v_start - 1];
            END IF;
        END LOOP;
    ELSE
        -- One by one, each against the stream as it is now (its own earlier appends in
        -- this group included) and in a subtransaction of its own.
        v_start := 1;
        FOR i IN 1..v_n LOOP
            v_exp := p_expected[i];
            SELECT COALESCE(max(e.stream_version), -1) INTO v_cur
            FROM eventfold_events e WHERE e.stream_id = p_streams[p_stream_of[i]];
            IF (v_exp = -2 AND v_cur <> -1) OR (v_exp = -3 AND v_cur = -1)
               OR (v_exp >= 0 AND v_cur <> v_exp) THEN
                v_status[i] := 1;
                v_actual[i] := v_cur;
            ELSE
                BEGIN
                    WITH ins AS (
                        INSERT INTO eventfold_events AS e
                            (global_position, stream_id, category, stream_version, event_id,
                             event_type, schema_version, data, metadata)
                        SELECT nextval('eventfold_positions'), p_streams[p_stream_of[i]],
                               p_categories[p_stream_of[i]], v_cur + u.ord, u.id, u.typ, u.sv,
                               u.data::jsonb, u.meta::jsonb
                        FROM unnest(p_event_ids[v_start:v_start + p_counts[i] - 1],
                                    p_event_types[v_start:v_start + p_counts[i] - 1],
                                    p_schema_versions[v_start:v_start + p_counts[i] - 1],
                                    p_data[v_start:v_start + p_counts[i] - 1],
                                    p_metadata[v_start:v_start + p_counts[i] - 1])
                             WITH ORDINALITY AS u(id, typ, sv, data, meta, ord)
                        ORDER BY u.ord
                        RETURNING e.global_position
                    )
                    SELECT min(ins.global_position), max(ins.global_position)
                    INTO v_one_lo, v_one_hi FROM ins;
                    v_base[i] := v_cur + 1;
                    v_lo[i] := v_one_lo;
                    v_hi[i] := v_one_hi;
                EXCEPTION WHEN unique_violation THEN
                    v_status[i] := 2;
                END;
            END IF;
            v_start := v_start + p_counts[i];
        END LOOP;
    END IF;

    RETURN QUERY
    SELECT n, v_status[n], v_lo[n], v_hi[n], v_base[n], v_actual[n]
    FROM generate_series(1, v_n) AS n ORDER BY n;
END
$$;
