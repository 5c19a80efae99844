-- An event's type in a column of its own, written with the event, so that the writer's
-- key pass (store/sqlite/event_keys.rs) and type filters read it without parsing the body.
-- Events written before this migration have none; readers fall back to the body's `type`.
ALTER TABLE events ADD COLUMN type TEXT;
