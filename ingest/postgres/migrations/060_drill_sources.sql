-- Drills by source (issue 12): a drill names the devices it stages (`gateway/device`). Only their
-- records, and records a device itself flags as drill (a test press), are drills; any other alarm
-- at the site during the drill window is real. Owner: rules/alerts.
alter table drills add column if not exists devices text[] not null default '{}';
