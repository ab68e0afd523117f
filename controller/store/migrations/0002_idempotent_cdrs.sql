-- A CDR is written at most once: its key names the call and, for a leg record, the participant
-- ('call:<call id>', 'leg:<call id>:<participant id>'), and writes skip keys already there. So a
-- write retried after an outage, or after a commit whose answer was lost, adds nothing.
ALTER TABLE cdrs ADD COLUMN record_key TEXT;
-- records from before this version: the first of each (kind, call, participant) gets the key,
-- any later duplicate its own (the unique index below must hold)
UPDATE cdrs SET record_key = CASE kind WHEN 'call' THEN 'call:' || call_id
                                     ELSE 'leg:' || call_id || ':' || COALESCE(participant_id, '') END
 WHERE id IN (SELECT MIN(id) FROM cdrs GROUP BY kind, call_id, participant_id);
UPDATE cdrs SET record_key = 'duplicate:' || id WHERE record_key IS NULL;
CREATE UNIQUE INDEX cdrs_record_key ON cdrs (record_key);
CREATE INDEX cdrs_call ON cdrs (call_id, kind);
CREATE INDEX recordings_call ON recordings (call_id, started_at);
