-- Recordings are made by the engine: what it says of each (the format, how it ended, each
-- track's participant, offset from the mix's start and duration) beside the index row. Rows of
-- recordings made before this version have none: they were WAV mixes (the store says so).
CREATE TABLE recording_details (
    id TEXT PRIMARY KEY,
    format TEXT NOT NULL,
    tracks_mode TEXT NOT NULL,
    engine TEXT,
    state TEXT NOT NULL,
    tracks TEXT NOT NULL DEFAULT '[]'   -- JSON: [{participant_id, track_id, label, kind, offset_s, duration_s, file}]
);
