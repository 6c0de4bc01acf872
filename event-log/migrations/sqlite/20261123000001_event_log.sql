-- The event log, embedded. SQLite runs one write transaction at a time, so positions
-- commit in order and a reader paging by position can never skip an event.
CREATE TABLE eventfold_events (
    global_position INTEGER PRIMARY KEY,
    stream_id       TEXT    NOT NULL,
    category        TEXT    NOT NULL,
    stream_version  INTEGER NOT NULL,
    event_id        BLOB    NOT NULL,
    event_type      TEXT    NOT NULL,
    schema_version  INTEGER NOT NULL,
    data            TEXT    NOT NULL,
    metadata        TEXT    NOT NULL,
    recorded_at     TEXT    NOT NULL,
    CONSTRAINT eventfold_events_event_id_key UNIQUE (event_id),
    CONSTRAINT eventfold_events_stream_version_key UNIQUE (stream_id, stream_version)
);

CREATE INDEX eventfold_events_category_position ON eventfold_events (category, global_position);
