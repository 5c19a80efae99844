-- Migration 8 of the embedded store gives events a `type` column so that its batched key
-- pass (migration 7) stops parsing each event's JSON body for the type, 3 % of a step's
-- instructions there. PostgreSQL indexes the type as an expression (`events_by_type`,
-- migration 4), computed once as each event is written. This version changes nothing, so
-- that both stores count their schema versions alike.
SELECT 1;
