-- Group commit without deadlocks: eventfold_append_group as before, and each group
-- first takes a transaction-level advisory lock on each of its streams, in key order.
--
-- Before, two groups appending to the same streams in different orders (group A: X then
-- Y, group B: Y then X, both with the same next versions) each inserted a row the other
-- then had to wait for (the (stream_id, stream_version) key): PostgreSQL found the
-- deadlock and failed one group whole, and its callers were told their appends "may or
-- may not be stored". Sixteen writers on 200 streams met it in two runs out of five.
--
-- The lock keys are (17735, hashtext(stream id)): the two-integer form, which
-- eventfold_safe_position never counts (it reads only the one-bigint in-flight locks of
-- namespace 17734). Two streams whose ids hash alike only take turns.

CREATE OR REPLACE FUNCTION eventfold_append_group(
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
    -- Then each of the group's streams, in one order for every group (of their keys):
    -- two groups writing the same streams take turns instead of each waiting on a row
    -- the other inserted (which PostgreSQL ends as a deadlock, failing both groups).
    PERFORM pg_advisory_xact_lock(17735, k.key)
    FROM (SELECT DISTINCT hashtext(s.id) AS key FROM unnest(p_streams) AS s(id) ORDER BY 1) k;

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
